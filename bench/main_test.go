//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// tinyImage is an image that builds in about a second.
func tinyImage() imageSpec {
	return imageSpec{BigMiB: 8, SmallFiles: 100, SmallDirs: 4, SmallMinKiB: 1, SmallMaxKiB: 16,
		LargeDir: 500, SparseMiB: 32, SparseChunks: 8, Seed: 7}
}

// TestTinyRun runs the whole harness on a tiny image, once per workload,
// on every mount kind, and checks that it produced numbers and left
// nothing mounted; then it checks that a content mismatch fails the run.
// Root only (loop devices, mounts, drop_caches); about 15 seconds.
func TestTinyRun(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices, mounts and drop_caches")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is needed to build mount.safe and safefsd")
	}
	cfg := config{
		RepoRoot:   "..",
		CacheDir:   t.TempDir(),
		BinDir:     t.TempDir(),
		Build:      true,
		Runs:       1,
		Mounts:     []string{kindKernel, kindFuse2fs, kindSafefs},
		Workloads:  []string{"mount", "seq-cold", "direct", "fio-rand", "small-cat", "ls-l"},
		FioRuntime: time.Second,
		Verify:     true,
		Markdown:   filepath.Join(t.TempDir(), "table.md"),
		Image:      tinyImage(),
	}
	if err := cfg.complete(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var stdout, stderr bytes.Buffer
	err := runAndClean(ctx, cfg, &stdout, &stderr)
	t.Logf("output:\n%s", stdout.String())
	if err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	out := stdout.String()
	for _, w := range cfg.Workloads {
		label := workloadByID(w).label
		line := lineWith(out, label)
		if line == "" {
			t.Errorf("no row %q in the table", label)
			continue
		}
		if strings.Contains(line, "FAILED") {
			t.Errorf("row %q failed: %s", label, line)
		}
	}
	if strings.Count(lineWith(out, "mount time"), "ms") < 1 {
		t.Errorf("no mount time row")
	}
	md, err := os.ReadFile(cfg.Markdown)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "| workload | unit | better | kernel | fuse2fs | safefs |") {
		t.Errorf("markdown table header missing:\n%s", md)
	}

	// A manifest that disagrees with the image must fail the run, not
	// print numbers.
	manPath := filepath.Join(cfg.CacheDir, cfg.Image.key()+".json")
	man, err := readManifest(manPath)
	if err != nil {
		t.Fatal(err)
	}
	man.BigSHA256 = strings.Repeat("0", 64)
	data, _ := json.Marshal(man)
	if err := os.WriteFile(manPath, data, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.Build, cfg.Mounts, cfg.Workloads, cfg.Markdown = false, []string{kindKernel}, []string{"seq-cold"}, ""
	stdout.Reset()
	err = runAndClean(ctx, cfg, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "sha256") {
		t.Errorf("run with a wrong manifest: error %v, want a sha256 mismatch", err)
	}
	if line := lineWith(stdout.String(), workloadByID("seq-cold").label); !strings.Contains(line, "FAILED") {
		t.Errorf("run with a wrong manifest: the row does not say FAILED: %q", line)
	}
}

// runAndClean runs the harness and its cleanup, and checks that nothing
// of ours stays mounted.
func runAndClean(ctx context.Context, cfg config, stdout, stderr *bytes.Buffer) error {
	cleanup := &cleanupStack{}
	err := run(ctx, cfg, cleanup, stdout, stderr)
	if cerr := cleanup.run(); cerr != nil && err == nil {
		err = cerr
	}
	ms, merr := readMountinfo()
	if merr != nil {
		return merr
	}
	prefix := filepath.Join(os.TempDir(), "safefs-bench-") + strconv.Itoa(os.Getpid()) + "-"
	for _, m := range ms {
		if strings.HasPrefix(m.dir, prefix) {
			return &leftMount{m.dir}
		}
	}
	return err
}

type leftMount struct{ dir string }

func (e *leftMount) Error() string { return "left mounted after cleanup: " + e.dir }

// lineWith returns the first line of s containing sub.
func lineWith(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}

// TestTable checks the table's arithmetic and wording without mounting
// anything: medians, ratio direction, targets, n/a and failures.
func TestTable(t *testing.T) {
	if got := median([]float64{3, 1, 2}); got != 2 {
		t.Errorf("median(3,1,2) = %v, want 2", got)
	}
	if got := median([]float64{4, 1, 2, 3}); got != 2.5 {
		t.Errorf("median(4,1,2,3) = %v, want 2.5", got)
	}
	h := &harness{kinds: []*fsKind{
		{name: kindKernel},
		{name: kindFuse2fs, unavailable: "fuse2fs not installed"},
		{name: kindSafefs, peakRSS: 20 << 20},
	}}
	res := results{}
	res.cell("mount", kindKernel).samples = []float64{10, 12, 11}
	res.cell("mount", kindSafefs).samples = []float64{33}
	res.cell("seq-cold", kindKernel).samples = []float64{1000}
	res.cell("seq-cold", kindSafefs).samples = []float64{800}
	res.cell("ls-l", kindKernel).samples = []float64{100}
	res.cell("ls-l", kindSafefs).samples = []float64{120}
	res.cell("direct", kindKernel).samples = []float64{500}
	res.cell("direct", kindSafefs).na = "O_DIRECT refused"
	res.cell("small-cat", kindKernel).samples = []float64{50}
	res.cell("small-cat", kindSafefs).errs = []error{os.ErrNotExist}
	cfg := config{Workloads: []string{"mount", "seq-cold", "direct", "small-cat", "ls-l"}}
	tbl := buildTable(cfg, &manifest{}, h, res)
	var buf bytes.Buffer
	if err := tbl.writeText(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, c := range []struct{ row, want string }{
		{"mount time", "3.00× worse"},
		{"mount time", "< 50 ms: met"},
		{"cold sequential", "0.80× worse"},
		{"cold sequential", "≥ 0.90× kernel: MISSED"},
		{"ls -l", "1.20× worse"},
		{"ls -l", "≤ 1.50× kernel: met"},
		{"O_DIRECT", "n/a ["},
		{"find + cat", "FAILED ["},
		{"daemon peak RSS", "20.0"},
		{"daemon peak RSS", "< 64 MiB: met"},
		{"cold sequential", "not installed"},
	} {
		if line := lineWith(out, c.row); !strings.Contains(line, c.want) {
			t.Errorf("row %q: want %q in %q", c.row, c.want, line)
		}
	}
	if len(tbl.failures()) != 1 {
		t.Errorf("failures = %q, want exactly the find + cat one", tbl.failures())
	}
}
