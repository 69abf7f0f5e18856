//go:build linux

package main

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"text/tabwriter"
)

// table is the benchmark's one result table, ready to print as text or
// markdown.
type table struct {
	preface []string
	kinds   []string // value columns, in order
	ratios  []string // kinds safefs is compared with (kernel, fuse2fs)
	rows    []tableRow
	notes   []string // footnotes: n/a reasons and failures
	info    []string // lines after the legend
	fails   []string // failures, for the exit status
}

type tableRow struct {
	label        string
	unit         string
	higherBetter bool
	target       target
	cells        map[string]tableCell
}

// tableCell is a number, or a text saying why there is none.
type tableCell struct {
	ok     bool
	value  float64
	text   string
	failed bool
}

// median of a non-empty slice (the mean of the middle two for an even
// count).
func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// buildTable turns a run's results into the table.
func buildTable(cfg config, man *manifest, h *harness, res results) *table {
	t := &table{}
	for _, k := range h.kinds {
		t.kinds = append(t.kinds, k.name)
	}
	if containsString(t.kinds, kindSafefs) {
		for _, k := range t.kinds {
			if k != kindSafefs {
				t.ratios = append(t.ratios, k)
			}
		}
	}
	note := func(text string) int {
		t.notes = append(t.notes, text)
		return len(t.notes)
	}
	fail := func(row, kind, detail string) tableCell {
		n := note(fmt.Sprintf("FAILED: %s on %s: %s", row, kind, detail))
		t.fails = append(t.fails, fmt.Sprintf("%s on %s: %s", row, kind, detail))
		return tableCell{text: fmt.Sprintf("FAILED [%d]", n), failed: true}
	}
	unavailable := map[string]tableCell{}
	for _, k := range h.kinds {
		if k.unavailable != "" {
			unavailable[k.name] = tableCell{text: fmt.Sprintf("%s [%d]", "not installed", note(fmt.Sprintf("%s: %s", k.name, k.unavailable)))}
		}
	}
	brokenNote := map[string]int{}
	broken := func(label string, k *fsKind) tableCell {
		if _, ok := brokenNote[k.name]; !ok {
			t.fails = append(t.fails, fmt.Sprintf("%s: %v", k.name, k.broken))
			brokenNote[k.name] = note(fmt.Sprintf("FAILED: %s: %v (no further runs on %s)", k.name, k.broken, k.name))
		}
		return tableCell{text: fmt.Sprintf("FAILED [%d]", brokenNote[k.name]), failed: true}
	}

	for _, w := range workloads {
		if !containsString(cfg.Workloads, w.id) {
			continue
		}
		row := tableRow{label: w.label, unit: w.unit, higherBetter: w.higherBetter, target: w.target, cells: map[string]tableCell{}}
		for _, k := range h.kinds {
			c := res.cell(w.id, k.name)
			switch {
			case k.unavailable != "":
				row.cells[k.name] = unavailable[k.name]
			case len(c.errs) > 0:
				var msgs []string
				for _, e := range c.errs {
					msgs = append(msgs, e.Error())
				}
				row.cells[k.name] = fail(w.label, k.name, fmt.Sprintf("%d of %d runs: %s", len(c.errs), len(c.errs)+len(c.samples), strings.Join(msgs, "; ")))
			case c.na != "":
				row.cells[k.name] = tableCell{text: fmt.Sprintf("n/a [%d]", note(fmt.Sprintf("n/a: %s on %s: %s", w.label, k.name, c.na)))}
			case len(c.samples) > 0:
				row.cells[k.name] = tableCell{ok: true, value: median(c.samples)}
			case k.broken != nil:
				row.cells[k.name] = broken(w.label, k)
			default:
				row.cells[k.name] = fail(w.label, k.name, "no run completed")
			}
		}
		t.rows = append(t.rows, row)
	}

	// Daemon peak RSS: the largest VmHWM over all of a kind's mounts.
	rssRow := tableRow{label: "daemon peak RSS (VmHWM, largest over all mounts)", unit: "MiB",
		target: target{absolute: 64}, cells: map[string]tableCell{}}
	for _, k := range h.kinds {
		switch {
		case k.name == kindKernel:
			rssRow.cells[k.name] = tableCell{text: "— (in kernel)"}
		case k.unavailable != "":
			rssRow.cells[k.name] = unavailable[k.name]
		case k.rssErr != nil:
			rssRow.cells[k.name] = fail(rssRow.label, k.name, k.rssErr.Error())
		case k.peakRSS > 0:
			rssRow.cells[k.name] = tableCell{ok: true, value: float64(k.peakRSS) / (1 << 20)}
		case k.broken != nil:
			rssRow.cells[k.name] = broken(rssRow.label, k)
		default:
			rssRow.cells[k.name] = tableCell{text: "—"}
		}
	}
	t.rows = append(t.rows, rssRow)

	var ra []string
	for _, k := range h.kinds {
		if k.readAhead != "" {
			ra = append(ra, k.name+" "+k.readAhead)
		}
	}
	if len(ra) > 0 {
		t.info = append(t.info, "Read-ahead as mounted (loop device reset to its default before each mount): "+strings.Join(ra, "; ")+".")
	}
	return t
}

// failures lists what failed, for the error the program exits with.
func (t *table) failures() []string { return t.fails }

// formatValue prints a number with the precision its size deserves.
func formatValue(v float64, unit string) string {
	switch {
	case unit == "IOPS" || math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func (c tableCell) format(unit string) string {
	if c.ok {
		return formatValue(c.value, unit)
	}
	return c.text
}

// ratio is safefs's value over other's, with a word saying which is
// better in the row's direction.
func (r tableRow) ratio(other string) string {
	s, o := r.cells[kindSafefs], r.cells[other]
	if !s.ok || !o.ok || o.value == 0 {
		return "—"
	}
	x := s.value / o.value
	verdict := "worse"
	switch {
	case math.Abs(x-1) < 0.02:
		verdict = "same"
	case (x > 1) == r.higherBetter:
		verdict = "better"
	}
	return fmt.Sprintf("%.2f× %s", x, verdict)
}

// targetText is the row's target and whether safefs meets it.
func (r tableRow) targetText() string {
	s := r.cells[kindSafefs]
	var goal string
	var met, known bool
	switch {
	case r.target.absolute != 0:
		goal = fmt.Sprintf("< %g %s", r.target.absolute, r.unit)
		known, met = s.ok, s.value < r.target.absolute
	case r.target.vsKernel != 0:
		op := "≤"
		if r.higherBetter {
			op = "≥"
		}
		goal = fmt.Sprintf("%s %.2f× kernel", op, r.target.vsKernel)
		k := r.cells[kindKernel]
		if s.ok && k.ok && k.value != 0 {
			x := s.value / k.value
			known = true
			met = x <= r.target.vsKernel
			if r.higherBetter {
				met = x >= r.target.vsKernel
			}
		}
	default:
		return "—"
	}
	switch {
	case !known:
		return goal + ": ?"
	case met:
		return goal + ": met"
	default:
		return goal + ": MISSED"
	}
}

func (r tableRow) direction() string {
	if r.higherBetter {
		return "higher"
	}
	return "lower"
}

// header and cells of every line, shared by both formats.
func (t *table) grid() (header []string, lines [][]string) {
	header = []string{"workload", "unit", "better"}
	header = append(header, t.kinds...)
	for _, k := range t.ratios {
		header = append(header, "safefs/"+k)
	}
	if containsString(t.kinds, kindSafefs) {
		header = append(header, "target for safefs")
	}
	for _, r := range t.rows {
		line := []string{r.label, r.unit, r.direction()}
		for _, k := range t.kinds {
			line = append(line, r.cells[k].format(r.unit))
		}
		for _, k := range t.ratios {
			line = append(line, r.ratio(k))
		}
		if containsString(t.kinds, kindSafefs) {
			line = append(line, r.targetText())
		}
		lines = append(lines, line)
	}
	return header, lines
}

const legend = "Ratios are safefs's value divided by the other mount's; \"better\"/\"worse\" read them in the row's direction " +
	"(MB/s and IOPS: higher is better; ms and MiB: lower is better); \"same\" is within 2%. MB/s is 10^6 bytes/s."

// writeText prints the table for a terminal.
func (t *table) writeText(w io.Writer) error {
	for _, p := range t.preface {
		fmt.Fprintln(w, p)
	}
	fmt.Fprintln(w)
	header, lines := t.grid()
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, l := range lines {
		fmt.Fprintln(tw, strings.Join(l, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, legend)
	for _, l := range t.info {
		fmt.Fprintln(w, l)
	}
	for i, n := range t.notes {
		fmt.Fprintf(w, "[%d] %s\n", i+1, n)
	}
	return nil
}

// writeMarkdown prints the table as markdown, for bench/README.md.
func (t *table) writeMarkdown(w io.Writer) error {
	for _, p := range t.preface {
		fmt.Fprintln(w, p)
		fmt.Fprintln(w)
	}
	header, lines := t.grid()
	esc := func(cells []string) string {
		out := make([]string, len(cells))
		for i, c := range cells {
			out[i] = strings.ReplaceAll(c, "|", `\|`)
		}
		return "| " + strings.Join(out, " | ") + " |"
	}
	fmt.Fprintln(w, esc(header))
	sep := make([]string, len(header))
	for i := range sep {
		sep[i] = "---"
		if i >= 3 && i < 3+len(t.kinds)+len(t.ratios) {
			sep[i] = "---:"
		}
	}
	fmt.Fprintln(w, "|"+strings.Join(sep, "|")+"|")
	for _, l := range lines {
		fmt.Fprintln(w, esc(l))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, legend)
	for _, l := range t.info {
		fmt.Fprintln(w)
		fmt.Fprintln(w, l)
	}
	if len(t.notes) > 0 {
		fmt.Fprintln(w)
		for i, n := range t.notes {
			fmt.Fprintf(w, "[%d] %s  \n", i+1, n)
		}
	}
	_, err := fmt.Fprint(w, "")
	return err
}
