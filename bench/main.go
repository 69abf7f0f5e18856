//go:build linux

// Command bench compares safefs with the kernel's own ext4 and with fuse2fs
// on one ext4 image: sequential, direct and random reads, small-file and
// directory walks, mount time and the daemon's memory.
//
// It builds a benchmark image once (cached under -cache), attaches it to a
// read-only loop device with direct I/O, and mounts it, one mount at a time,
// three ways: the kernel's ext4 (mount -o ro), fuse2fs -o ro, and safefs
// through bin/mount.safe (a fuseblk mount served by bin/safefsd). Each
// workload runs -runs times on each mount, the mounts taking turns, and the
// median goes into one table; -markdown writes the same table as markdown.
//
// Every cold run gets a fresh mount and then `sync; echo 3 >
// /proc/sys/vm/drop_caches`, so that neither the kernel's caches nor a
// daemon's own caches are warm. Nothing asserts timings, but a workload that
// fails (a read error, a short read, a tool exiting non-zero, contents that
// differ from the source) makes the program print FAILED in its cell and
// exit with status 1. It unmounts and detaches everything it set up, also on
// failure and on SIGINT/SIGTERM.
//
// It must run as root. See bench/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// config is everything a run depends on.
type config struct {
	// RepoRoot is the safefs repository (where go.mod says module safefs).
	RepoRoot string
	// CacheDir holds the built benchmark images, keyed by their spec.
	CacheDir string
	// BinDir holds mount.safe and safefsd.
	BinDir string
	// Build runs `make build BIN=BinDir` in RepoRoot first.
	Build bool
	// Runs is how many times each workload runs on each mount.
	Runs int
	// Mounts are the kinds to compare, in table order (kernel, fuse2fs,
	// safefs).
	Mounts []string
	// Workloads are the workload ids to run (see workloadIDs).
	Workloads []string
	// FioRuntime is each fio job's run time.
	FioRuntime time.Duration
	// Verify checks, on the first mount of each kind, that every file's
	// contents equal the source's.
	Verify bool
	// Markdown, if set, is a file to write the table to as markdown
	// ("-" for standard output).
	Markdown string
	// Verbose logs each step and each run's value to standard error.
	Verbose bool
	// Image describes the benchmark image.
	Image imageSpec
}

// defaultCacheDir is where images are cached unless -cache or
// SAFEFS_BENCH_CACHE says otherwise.
const defaultCacheDir = "/var/tmp/safefs-bench"

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(2)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cleanup := &cleanupStack{}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "bench: %v: stopping and cleaning up (again to force)\n", s)
		cancel()
		<-sigs
		fmt.Fprintf(os.Stderr, "bench: forcing cleanup\n")
		cleanup.force()
		os.Exit(130)
	}()

	err = run(ctx, cfg, cleanup, os.Stdout, os.Stderr)
	if cerr := cleanup.run(); cerr != nil {
		fmt.Fprintf(os.Stderr, "bench: cleanup: %v\n", cerr)
		if err == nil {
			err = cerr
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		if ctx.Err() != nil {
			os.Exit(130)
		}
		os.Exit(1)
	}
}

// parseFlags turns the command line into a config.
func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := defaultImageSpec()
	cacheDefault := defaultCacheDir
	if d := os.Getenv("SAFEFS_BENCH_CACHE"); d != "" {
		cacheDefault = d
	}
	var (
		cfg       config
		mounts    = fs.String("mounts", "kernel,fuse2fs,safefs", "mounts to compare, comma-separated (kernel, fuse2fs, safefs)")
		workloads = fs.String("workloads", strings.Join(workloadIDs(), ","), "workloads to run, comma-separated")
	)
	fs.StringVar(&cfg.RepoRoot, "repo", "", "safefs repository root (default: found from the working directory)")
	fs.StringVar(&cfg.CacheDir, "cache", cacheDefault, "directory for the cached benchmark image (env SAFEFS_BENCH_CACHE)")
	fs.StringVar(&cfg.BinDir, "bin", "", "directory with mount.safe and safefsd (default: REPO/bin)")
	fs.BoolVar(&cfg.Build, "build", true, "run `make build BIN=<bin>` in the repository first")
	fs.IntVar(&cfg.Runs, "runs", 3, "runs of each workload on each mount (the median is reported)")
	fs.DurationVar(&cfg.FioRuntime, "fio-runtime", 10*time.Second, "run time of each fio job")
	fs.BoolVar(&cfg.Verify, "verify", true, "check file contents against the source on the first mount of each kind")
	fs.StringVar(&cfg.Markdown, "markdown", "", "also write the table as markdown to this file (- for standard output)")
	fs.BoolVar(&cfg.Verbose, "v", false, "log each step and each run to standard error")
	fs.IntVar(&cfg.Image.BigMiB, "big-mib", def.BigMiB, "size of the random-data file, MiB")
	fs.IntVar(&cfg.Image.SmallFiles, "small-files", def.SmallFiles, "number of small files")
	fs.IntVar(&cfg.Image.SmallDirs, "small-dirs", def.SmallDirs, "directories the small files are spread over")
	fs.IntVar(&cfg.Image.LargeDir, "large-dir", def.LargeDir, "entries in the large directory")
	fs.IntVar(&cfg.Image.SparseMiB, "sparse-mib", def.SparseMiB, "size of the sparse file, MiB")
	fs.IntVar(&cfg.Image.SparseChunks, "sparse-chunks", def.SparseChunks, "64 KiB data chunks scattered over the sparse file")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: go run ./bench [flags]   (as root, from the safefs repository)\n\n"+
			"Compares safefs with the kernel's ext4 and fuse2fs on one cached ext4 image.\nWorkloads: %s\n\nFlags:\n",
			strings.Join(workloadIDs(), ", "))
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() != 0 {
		return config{}, fmt.Errorf("unexpected arguments %q (flags only; see -help)", fs.Args())
	}
	cfg.Image.SmallMinKiB, cfg.Image.SmallMaxKiB, cfg.Image.Seed = def.SmallMinKiB, def.SmallMaxKiB, def.Seed
	cfg.Mounts = splitList(*mounts)
	cfg.Workloads = splitList(*workloads)
	if err := cfg.complete(); err != nil {
		return config{}, err
	}
	return cfg, nil
}

// complete checks a config and fills in the defaults that depend on the
// environment (repository root, bin directory).
func (c *config) complete() error {
	if c.Runs < 1 {
		return fmt.Errorf("-runs %d: need at least one run", c.Runs)
	}
	if len(c.Mounts) == 0 {
		return errors.New("-mounts: no mount kinds given")
	}
	seen := map[string]bool{}
	for _, m := range c.Mounts {
		if m != kindKernel && m != kindFuse2fs && m != kindSafefs {
			return fmt.Errorf("-mounts: unknown mount kind %q (want kernel, fuse2fs or safefs)", m)
		}
		if seen[m] {
			return fmt.Errorf("-mounts: %q given twice", m)
		}
		seen[m] = true
	}
	for _, w := range c.Workloads {
		if workloadByID(w) == nil {
			return fmt.Errorf("-workloads: unknown workload %q (want some of %s)", w, strings.Join(workloadIDs(), ", "))
		}
	}
	if err := c.Image.check(); err != nil {
		return err
	}
	if c.RepoRoot == "" {
		root, err := findRepoRoot()
		if err != nil {
			return err
		}
		c.RepoRoot = root
	}
	if c.BinDir == "" {
		c.BinDir = filepath.Join(c.RepoRoot, "bin")
	}
	var err error
	if c.BinDir, err = filepath.Abs(c.BinDir); err != nil {
		return fmt.Errorf("-bin: %w", err)
	}
	if c.CacheDir, err = filepath.Abs(c.CacheDir); err != nil {
		return fmt.Errorf("-cache: %w", err)
	}
	return nil
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// findRepoRoot walks up from the working directory to the go.mod of
// module safefs.
func findRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the repository: %w", err)
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(data)), "module safefs") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no safefs go.mod in the working directory or above it (run from the repository, or give -repo)")
		}
		dir = parent
	}
}

// run does the whole benchmark: build, image, mounts, workloads, table.
// It registers everything it sets up on cleanup; the caller runs it.
func run(ctx context.Context, cfg config, cleanup *cleanupStack, stdout, stderr io.Writer) error {
	logf := func(format string, args ...any) {
		if cfg.Verbose {
			fmt.Fprintf(stderr, "bench: "+format+"\n", args...)
		}
	}
	if os.Geteuid() != 0 {
		return errors.New("must run as root (loop devices, mounts, drop_caches)")
	}
	for _, tool := range []string{"mke2fs", "e2fsck", "debugfs", "find", "cat", "ls"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is needed: %w (apt-get install e2fsprogs coreutils findutils)", tool, err)
		}
	}
	reapStale(logf)

	if containsString(cfg.Mounts, kindSafefs) {
		if cfg.Build {
			logf("building mount.safe and safefsd into %s", cfg.BinDir)
			if err := buildBinaries(ctx, cfg.RepoRoot, cfg.BinDir); err != nil {
				return err
			}
		}
		for _, b := range []string{"mount.safe", "safefsd"} {
			if _, err := os.Stat(filepath.Join(cfg.BinDir, b)); err != nil {
				return fmt.Errorf("safefs binary: %w (run make build, or leave -build on)", err)
			}
		}
	}

	img, man, err := ensureImage(ctx, cfg.CacheDir, cfg.Image, logf)
	if err != nil {
		return err
	}
	start := snapshotMachine(cfg.RepoRoot)

	h, err := newHarness(ctx, cfg, img, man, cleanup, logf)
	if err != nil {
		return err
	}
	res, err := h.runAll(ctx)
	if err != nil {
		return err
	}
	end := snapshotMachine(cfg.RepoRoot)

	tbl := buildTable(cfg, man, h, res)
	tbl.preface = describeRun(cfg, man, start, end)
	if err := tbl.writeText(stdout); err != nil {
		return fmt.Errorf("writing the table: %w", err)
	}
	if cfg.Markdown != "" {
		if err := writeMarkdownFile(cfg.Markdown, tbl, stdout); err != nil {
			return err
		}
	}
	if fails := tbl.failures(); len(fails) > 0 {
		return fmt.Errorf("%d workload(s) failed; their cells say FAILED:\n  %s", len(fails), strings.Join(fails, "\n  "))
	}
	return nil
}

// writeMarkdownFile writes the table as markdown to path, or to stdout for
// "-".
func writeMarkdownFile(path string, tbl *table, stdout io.Writer) error {
	if path == "-" {
		fmt.Fprintln(stdout)
		return tbl.writeMarkdown(stdout)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("-markdown: %w", err)
	}
	if err := tbl.writeMarkdown(f); err != nil {
		f.Close()
		return fmt.Errorf("-markdown: writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("-markdown: %w", err)
	}
	return nil
}

// buildBinaries runs `make build BIN=binDir` in the repository.
func buildBinaries(ctx context.Context, repo, binDir string) error {
	cmd := exec.CommandContext(ctx, "make", "-C", repo, "build", "BIN="+binDir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("make build in %s: %v\n%s", repo, err, out)
	}
	return nil
}

// machine is what the table's preface says about the machine at one moment.
type machine struct {
	when    time.Time
	loadavg string
	kernel  string
	cpus    int
	commit  string
}

// snapshotMachine reads the load average, kernel release and the
// repository's commit.
func snapshotMachine(repo string) machine {
	m := machine{when: time.Now(), cpus: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			m.loadavg = strings.Join(f[:3], " ")
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(b))
	}
	if out, err := exec.Command("git", "-C", repo, "describe", "--always", "--dirty").Output(); err == nil {
		m.commit = strings.TrimSpace(string(out))
	}
	return m
}

// describeRun is the text above the table: when, where, what.
func describeRun(cfg config, man *manifest, start, end machine) []string {
	return []string{
		fmt.Sprintf("%s, kernel %s, %d CPUs, load average %s at start and %s at end; safefs %s.",
			start.when.Format("2006-01-02 15:04"), start.kernel, start.cpus, start.loadavg, end.loadavg, orUnknown(start.commit)),
		fmt.Sprintf("Image: %s. Median of %d run(s) per mount; every cold run on a fresh mount after sync + drop_caches.",
			man.describe(), cfg.Runs),
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "(commit unknown)"
	}
	return s
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
