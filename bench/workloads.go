//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// workload is one measured operation on a mount.
type workload struct {
	id    string // the -workloads name
	label string // the table's row label (without the unit)
	unit  string
	// higherBetter says which way the row reads: MB/s and IOPS are
	// better higher, times better lower.
	higherBetter bool
	// cold runs get a fresh mount followed by sync + drop_caches; warm
	// runs read the data once, untimed, first.
	cold   bool
	target target
	// mountOnly: the mount itself is the measurement, made after sync +
	// drop_caches with the mount programs' files read back into the page
	// cache (a first mount of a device, by programs that are installed
	// and in use).
	mountOnly bool
	// run measures once on m and returns the value in unit.
	run func(ctx context.Context, h *harness, m *mounted) (float64, error)
}

// target is the goal from the issue for safefs on one row.
type target struct {
	// vsKernel, if not 0, is the bound on safefs/kernel: at least it for
	// higher-is-better rows, at most it for lower-is-better rows.
	vsKernel float64
	// absolute, if not 0, is an upper bound on safefs's own value.
	absolute float64
}

// naError marks a workload that does not apply to a mount (O_DIRECT
// refused, fio missing): its cell says n/a with the reason, and it is not
// a failure.
type naError struct{ reason string }

func (e *naError) Error() string { return "n/a: " + e.reason }

// workloads in table order. Daemon RSS is not a workload: every mount
// with a daemon measures it.
var workloads = []*workload{
	{id: "mount", label: "mount time, cold (from starting the mount command to the mount answering stat)", unit: "ms",
		target: target{absolute: 50}, mountOnly: true},
	{id: "seq-cold", label: "cold sequential read of the big file (1 MiB reads)", unit: "MB/s", higherBetter: true, cold: true,
		target: target{vsKernel: 0.9}, run: seqCold},
	{id: "seq-warm", label: "warm re-read of the big file (page cache)", unit: "MB/s", higherBetter: true,
		target: target{vsKernel: 0.95}, run: seqWarm},
	{id: "direct", label: "O_DIRECT 1 MiB reads of the big file", unit: "MB/s", higherBetter: true, cold: true, run: directRead},
	{id: "fio-rand", label: "4 KiB random reads, buffered (fio psync, cold)", unit: "IOPS", higherBetter: true, cold: true,
		target: target{vsKernel: 0.8}, run: fioBuffered},
	{id: "fio-rand-direct", label: "4 KiB random reads, O_DIRECT (fio psync)", unit: "IOPS", higherBetter: true, cold: true,
		target: target{vsKernel: 0.8}, run: fioDirect},
	{id: "small-cat", label: "find + cat of the small files (cold)", unit: "ms", cold: true,
		target: target{vsKernel: 1.5}, run: smallCat},
	{id: "ls-l", label: "ls -l of the large directory (cold)", unit: "ms", cold: true,
		target: target{vsKernel: 1.5}, run: lsLarge},
	{id: "find-ls", label: "find -ls over the whole tree (cold)", unit: "ms", cold: true, run: findLs},
}

func workloadIDs() []string {
	ids := make([]string, len(workloads))
	for i, w := range workloads {
		ids[i] = w.id
	}
	return ids
}

func workloadByID(id string) *workload {
	for _, w := range workloads {
		if w.id == id {
			return w
		}
	}
	return nil
}

// mbps converts bytes in a duration to MB/s (10^6 bytes per second).
func mbps(n int64, d time.Duration) float64 { return float64(n) / 1e6 / d.Seconds() }

func seqCold(ctx context.Context, h *harness, m *mounted) (float64, error) {
	d, err := h.readFile(ctx, filepath.Join(m.dir, bigPath), 0, h.man.BigSize)
	if err != nil {
		return 0, err
	}
	return mbps(h.man.BigSize, d), nil
}

func seqWarm(ctx context.Context, h *harness, m *mounted) (float64, error) {
	if _, err := h.readFile(ctx, filepath.Join(m.dir, bigPath), 0, h.man.BigSize); err != nil {
		return 0, fmt.Errorf("first (untimed) read: %w", err)
	}
	d, err := h.readFile(ctx, filepath.Join(m.dir, bigPath), 0, h.man.BigSize)
	if err != nil {
		return 0, err
	}
	return mbps(h.man.BigSize, d), nil
}

func directRead(ctx context.Context, h *harness, m *mounted) (float64, error) {
	d, err := h.readFile(ctx, filepath.Join(m.dir, bigPath), unix.O_DIRECT, h.man.BigSize)
	if err != nil {
		return 0, err
	}
	return mbps(h.man.BigSize, d), nil
}

// readFile reads path from start to end in 1 MiB reads (open included in
// the time) and checks that it got want bytes. With O_DIRECT, EINVAL from
// open or read means the mount does not do direct I/O: n/a.
func (h *harness) readFile(ctx context.Context, path string, flags int, want int64) (time.Duration, error) {
	direct := flags&unix.O_DIRECT != 0
	start := time.Now()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|flags, 0)
	if err != nil {
		if direct && errors.Is(err, unix.EINVAL) {
			return 0, &naError{"open with O_DIRECT: " + err.Error()}
		}
		return 0, fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	var total int64
	for i := 0; ; i++ {
		if i%64 == 0 && ctx.Err() != nil {
			return 0, ctx.Err()
		}
		n, err := unix.Read(fd, h.buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			if direct && errors.Is(err, unix.EINVAL) && total == 0 {
				return 0, &naError{"O_DIRECT read: " + err.Error()}
			}
			return 0, fmt.Errorf("read %s at %d: %w", path, total, err)
		}
		if n == 0 {
			break
		}
		total += int64(n)
	}
	d := time.Since(start)
	if total != want {
		return 0, fmt.Errorf("read %s: got %d bytes, want %d", path, total, want)
	}
	return d, nil
}

func smallCat(ctx context.Context, h *harness, m *mounted) (float64, error) {
	return timeCommand(ctx, "find", filepath.Join(m.dir, smallDir), "-type", "f", "-exec", "cat", "--", "{}", "+")
}

func lsLarge(ctx context.Context, h *harness, m *mounted) (float64, error) {
	return timeCommand(ctx, "ls", "-l", filepath.Join(m.dir, largeDir))
}

func findLs(ctx context.Context, h *harness, m *mounted) (float64, error) {
	return timeCommand(ctx, "find", m.dir, "-ls")
}

// timeCommand runs a command with its output to /dev/null and returns its
// wall time in ms. A non-zero exit or anything on stderr is a failure.
func timeCommand(ctx context.Context, name string, args ...string) (float64, error) {
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return 0, err
	}
	defer devnull.Close()
	cmd := workloadCommand(ctx, name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = devnull, &stderr
	start := time.Now()
	err = cmd.Run()
	d := time.Since(start)
	if err != nil || stderr.Len() > 0 {
		return 0, fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), errOr(err, "exit 0 but wrote to stderr"), firstLines(stderr.String(), 5))
	}
	return float64(d) / float64(time.Millisecond), nil
}

// workloadCommand is a command that ends cleanly when ctx is done: first
// SIGTERM, which lets fio stop its job processes (a SIGKILLed fio leaves
// its job process behind, holding the mount and our output pipes), then
// after a grace period SIGKILL and closing its pipes.
func workloadCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

func errOr(err error, s string) string {
	if err != nil {
		return err.Error()
	}
	return s
}

func fioBuffered(ctx context.Context, h *harness, m *mounted) (float64, error) {
	return h.fioRandRead(ctx, m, false)
}

func fioDirect(ctx context.Context, h *harness, m *mounted) (float64, error) {
	return h.fioRandRead(ctx, m, true)
}

// fioRandRead runs one fio job of 4 KiB random reads over the big file
// and returns its IOPS.
func (h *harness) fioRandRead(ctx context.Context, m *mounted, direct bool) (float64, error) {
	if h.fio == "" {
		return 0, &naError{"fio not installed (apt-get install fio)"}
	}
	d := "0"
	if direct {
		d = "1"
	}
	args := []string{"--name=randread", "--filename=" + filepath.Join(m.dir, bigPath), "--readonly",
		"--rw=randread", "--bs=4k", "--size=" + strconv.FormatInt(h.man.BigSize, 10),
		"--runtime=" + strconv.Itoa(int(h.cfg.FioRuntime.Seconds()+0.5)) + "s", "--time_based",
		"--ioengine=psync", "--numjobs=1", "--direct=" + d, "--invalidate=1", "--output-format=json"}
	cmd := workloadCommand(ctx, h.fio, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	var res struct {
		Jobs []struct {
			Error int `json:"error"`
			Read  struct {
				IOPS     float64 `json:"iops"`
				TotalIOs int64   `json:"total_ios"`
			} `json:"read"`
		} `json:"jobs"`
	}
	out := stdout.Bytes()
	if i := bytes.IndexByte(out, '{'); i >= 0 {
		out = out[i:]
	}
	jsonErr := json.Unmarshal(out, &res)
	if jsonErr == nil && len(res.Jobs) == 1 && res.Jobs[0].Error != 0 {
		if direct && res.Jobs[0].Error == int(unix.EINVAL) {
			return 0, &naError{"fio --direct=1: " + unix.EINVAL.Error()}
		}
		return 0, fmt.Errorf("fio: job error %d (%v): %s", res.Jobs[0].Error, unix.Errno(res.Jobs[0].Error), firstLines(stderr.String(), 5))
	}
	if runErr != nil {
		return 0, fmt.Errorf("fio %s: %v: %s", strings.Join(args, " "), runErr, firstLines(stderr.String(), 5))
	}
	if jsonErr != nil || len(res.Jobs) != 1 {
		return 0, fmt.Errorf("fio: unexpected output (%v): %s", jsonErr, firstLines(stdout.String(), 5))
	}
	if res.Jobs[0].Read.TotalIOs == 0 {
		return 0, fmt.Errorf("fio: no reads completed: %s", firstLines(stderr.String(), 5))
	}
	return res.Jobs[0].Read.IOPS, nil
}

// verify checks a mount's contents against the manifest: the big and the
// sparse file's hashes, the small files' tree digest, the large
// directory's entry count.
func (h *harness) verify(ctx context.Context, m *mounted) error {
	for _, f := range []struct {
		path, want string
		size       int64
	}{
		{bigPath, h.man.BigSHA256, h.man.BigSize},
		{sparsePath, h.man.SparseSHA256, h.man.SparseSize},
	} {
		p := filepath.Join(m.dir, f.path)
		st, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		if st.Size() != f.size {
			return fmt.Errorf("verify: %s: size %d, want %d", p, st.Size(), f.size)
		}
		got, err := fileSHA256(ctx, p)
		if err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		if got != f.want {
			return fmt.Errorf("verify: %s: sha256 %s, want %s (the source's)", p, got, f.want)
		}
	}
	digest, n, err := treeDigest(ctx, filepath.Join(m.dir, smallDir))
	if err != nil {
		return fmt.Errorf("verify: small files: %w", err)
	}
	if n != h.man.Spec.SmallFiles {
		return fmt.Errorf("verify: %d small files under %s, want %d", n, filepath.Join(m.dir, smallDir), h.man.Spec.SmallFiles)
	}
	if digest != h.man.SmallDigest {
		return fmt.Errorf("verify: the small files' names, sizes or contents under %s differ from the source's", filepath.Join(m.dir, smallDir))
	}
	entries, err := os.ReadDir(filepath.Join(m.dir, largeDir))
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	if len(entries) != h.man.LargeDirEntries {
		return fmt.Errorf("verify: %s has %d entries, want %d", filepath.Join(m.dir, largeDir), len(entries), h.man.LargeDirEntries)
	}
	return nil
}

// cell collects one workload's runs on one mount kind.
type cell struct {
	samples []float64
	na      string  // why it does not apply, if it does not
	errs    []error // failed runs
}

// results maps workload id → kind name → cell.
type results map[string]map[string]*cell

func (r results) cell(w, k string) *cell {
	if r[w] == nil {
		r[w] = map[string]*cell{}
	}
	if r[w][k] == nil {
		r[w][k] = &cell{}
	}
	return r[w][k]
}

// runAll verifies each kind once, then runs every workload cfg.Runs times
// on every kind. The kinds take turns within each round (rotating who goes
// first), so that a change in the machine's load hits them alike.
func (h *harness) runAll(ctx context.Context) (results, error) {
	res := results{}
	if h.cfg.Verify {
		for _, k := range h.kinds {
			if k.unavailable != "" {
				continue
			}
			h.logf("%s: verifying contents against the source", k.name)
			err := h.withMount(ctx, k, false, func(m *mounted) error { return h.verify(ctx, m) })
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if err != nil {
				k.broken = err
			}
		}
	}
	for _, id := range h.cfg.Workloads {
		w := workloadByID(id)
		for r := 0; r < h.cfg.Runs; r++ {
			for i := range h.kinds {
				k := h.kinds[(i+r)%len(h.kinds)]
				c := res.cell(w.id, k.name)
				if k.unavailable != "" || k.broken != nil || c.na != "" {
					continue
				}
				var v float64
				var err error
				if w.mountOnly {
					if err = dropCaches(); err == nil {
						h.warmPrograms(ctx, k)
						err = h.withMount(ctx, k, false, func(m *mounted) error { v = m.mountMS; return nil })
					}
				} else {
					err = h.withMount(ctx, k, w.cold, func(m *mounted) error {
						var err error
						v, err = w.run(ctx, h, m)
						return err
					})
				}
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				var na *naError
				switch {
				case errors.As(err, &na):
					c.na = na.reason
					h.logf("%s %s: n/a: %s", w.id, k.name, na.reason)
				case err != nil:
					c.errs = append(c.errs, err)
					h.logf("%s %s: FAILED: %v", w.id, k.name, err)
				default:
					c.samples = append(c.samples, v)
					h.logf("%s %s run %d: %.1f %s", w.id, k.name, r+1, v, w.unit)
				}
			}
		}
	}
	return res, nil
}

// withMount mounts k, drops caches if cold, runs fn, and unmounts. A mount
// failure marks the kind broken; an unmount failure (a daemon that crashed
// or would not exit) fails the run.
func (h *harness) withMount(ctx context.Context, k *fsKind, cold bool, fn func(*mounted) error) error {
	m, err := h.mount(ctx, k)
	if err != nil {
		if ctx.Err() == nil {
			k.broken = err
		}
		return err
	}
	if cold {
		if err := dropCaches(); err != nil {
			h.unmount(m)
			return err
		}
	}
	err = fn(m)
	if uerr := h.unmount(m); uerr != nil {
		if err == nil {
			return uerr
		}
		// %v, not %w: a run whose unmount failed is a failure, not n/a.
		return fmt.Errorf("%v; then: %w", err, uerr)
	}
	return err
}

// warmPrograms reads the programs a kind's mount runs back into the page
// cache after drop_caches, and runs them once (--version) so that their
// shared libraries are cached too: the mount time should be the mount's,
// not the disk's loading executables.
func (h *harness) warmPrograms(ctx context.Context, k *fsKind) {
	var progs [][]string
	switch k.name {
	case kindKernel:
		progs = [][]string{{"mount", "--version"}}
	case kindFuse2fs:
		progs = [][]string{{h.fuse2fs, "-V"}}
	case kindSafefs:
		progs = [][]string{{filepath.Join(h.cfg.BinDir, "mount.safe"), "--version"}, {filepath.Join(h.cfg.BinDir, "safefsd"), "--version"}}
	}
	for _, p := range progs {
		if path, err := exec.LookPath(p[0]); err == nil {
			if f, err := os.Open(path); err == nil {
				io.Copy(io.Discard, f)
				f.Close()
			}
		}
		exec.CommandContext(ctx, p[0], p[1:]...).Run() // only warming: its result does not matter
	}
}
