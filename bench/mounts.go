//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The mount kinds, also the table's column names.
const (
	kindKernel  = "kernel"
	kindFuse2fs = "fuse2fs"
	kindSafefs  = "safefs"
)

// fsKind is one way of mounting the image and what its mounts measured
// apart from the workloads.
type fsKind struct {
	name string
	// unavailable says why this kind cannot run at all (fuse2fs not
	// installed); its cells say so instead of holding numbers.
	unavailable string
	// broken is the first mount or verification failure; the kind does
	// not run again and its remaining cells say FAILED.
	broken error
	// peakRSS is the largest daemon VmHWM seen before any unmount, bytes.
	peakRSS int64
	// rssErr is set if a daemon's VmHWM could not be read.
	rssErr error
	// readAhead describes the read-ahead in effect on the last mount.
	readAhead string
}

// mounted is one live mount.
type mounted struct {
	kind *fsKind
	dir  string
	// daemon is the serving process (fuse2fs, safefsd), 0 for the kernel.
	daemon int
	// daemonDone is closed once the daemon has exited; daemonErr then says
	// how, when that was not exit status 0.
	daemonDone chan struct{}
	daemonErr  error
	// mountMS is how long the mount took, ms.
	mountMS float64
}

// harness holds what every mount and workload shares.
type harness struct {
	cfg      config
	img      string
	man      *manifest
	loop     *loopDev
	mntRoot  string
	kinds    []*fsKind
	fuse2fs  string // path of fuse2fs, "" if not installed
	fio      string // path of fio, "" if not installed
	buf      []byte // 1 MiB, page-aligned (O_DIRECT needs that)
	logf     func(string, ...any)
	children sync.Map // pid → *os.Process: daemons to kill if unmounting does not end them
}

// newHarness attaches the loop device and makes the mount points, and
// registers their undoing on cleanup.
func newHarness(ctx context.Context, cfg config, img string, man *manifest, cleanup *cleanupStack, logf func(string, ...any)) (*harness, error) {
	h := &harness{cfg: cfg, img: img, man: man, logf: logf}
	if p, err := exec.LookPath("fuse2fs"); err == nil {
		h.fuse2fs = p
	}
	if p, err := exec.LookPath("fio"); err == nil {
		h.fio = p
	}
	// Daemons whose starter exits (safefsd after mount.safe) become our
	// children, so that we can wait for them and see how they exited;
	// PID 1 here may not reap them.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("PR_SET_CHILD_SUBREAPER: %w", err)
	}

	buf, err := unix.Mmap(-1, 0, 1<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return nil, fmt.Errorf("allocating the read buffer: %w", err)
	}
	h.buf = buf
	cleanup.push("read buffer", func(force bool) error {
		if force {
			return nil // a read may still be using it; the process is about to exit
		}
		return unix.Munmap(buf)
	})

	loop, err := attachLoop(img)
	if err != nil {
		return nil, err
	}
	h.loop = loop
	logf("loop device %s (read-only, direct I/O, autoclear) over %s", loop.path, img)
	cleanup.push("loop device "+loop.path, func(bool) error { return loop.close() })

	root, err := os.MkdirTemp("", fmt.Sprintf("safefs-bench-%d-", os.Getpid()))
	if err != nil {
		return nil, fmt.Errorf("mount points: %w", err)
	}
	h.mntRoot = root
	cleanup.push("mount points under "+root, func(force bool) error {
		h.killOrphans()
		err := unmountUnder(root, force)
		h.killChildren()
		if err == nil {
			err = os.RemoveAll(root) // only empty directories: nothing is mounted any more
		}
		return err
	})

	for _, name := range cfg.Mounts {
		k := &fsKind{name: name}
		if name == kindFuse2fs && h.fuse2fs == "" {
			k.unavailable = "fuse2fs not installed (apt-get install fuse2fs)"
		}
		if err := os.Mkdir(filepath.Join(root, name), 0o755); err != nil {
			return nil, fmt.Errorf("mount points: %w", err)
		}
		h.kinds = append(h.kinds, k)
	}
	return h, ctx.Err()
}

// mount mounts the image the kind's way and returns once the mount is in
// /proc/self/mountinfo and answers stat. The time from starting the mount
// command to then is recorded as the mount time.
func (h *harness) mount(ctx context.Context, k *fsKind) (*mounted, error) {
	dir := filepath.Join(h.mntRoot, k.name)
	if mounts, err := mountsUnder(dir); err != nil {
		return nil, err
	} else if len(mounts) > 0 {
		return nil, fmt.Errorf("%s: %s is still mounted", k.name, dir)
	}
	if err := h.loop.resetReadAhead(); err != nil {
		return nil, fmt.Errorf("%s: %w", k.name, err)
	}
	m := &mounted{kind: k, dir: dir}
	var (
		starter     *exec.Cmd // the command that mounts
		starterDone = make(chan struct{})
		starterErr  error
		out         = &lockedBuffer{}
	)
	switch k.name {
	case kindKernel:
		starter = exec.CommandContext(ctx, "mount", "-t", "ext4", "-o", "ro", h.loop.path, dir)
	case kindFuse2fs:
		// In the foreground, so that this process is the daemon; in its
		// own process group, so that a Ctrl-C reaches only us and we
		// unmount in order.
		starter = exec.Command(h.fuse2fs, h.loop.path, dir, "-o", "ro", "-f")
		starter.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	case kindSafefs:
		starter = exec.CommandContext(ctx, filepath.Join(h.cfg.BinDir, "mount.safe"), h.loop.path, dir, "-o", "ro")
		// Never a socket-activated service's daemon: the one beside
		// our mount.safe.
		starter.Env = append(os.Environ(), "SAFEFS_SOCKET=/nonexistent/safefs-bench.sock")
	default:
		return nil, fmt.Errorf("unknown mount kind %q", k.name)
	}
	starter.Stdout, starter.Stderr = out, out

	start := time.Now()
	if err := starter.Start(); err != nil {
		return nil, fmt.Errorf("%s: starting %s: %w", k.name, starter.Path, err)
	}
	go func() {
		starterErr = starter.Wait()
		if k.name == kindFuse2fs && starterErr != nil {
			m.daemonErr = fmt.Errorf("fuse2fs: %v: %s", starterErr, strings.TrimSpace(out.String()))
		}
		close(starterDone)
	}()
	if k.name == kindFuse2fs {
		m.daemon, m.daemonDone = starter.Process.Pid, starterDone
		h.children.Store(starter.Process.Pid, starter.Process)
	}
	tool := filepath.Base(starter.Path)
	fail := func(err error) (*mounted, error) {
		starter.Process.Kill() // an error if it has exited, which is fine
		h.forceUnmount(m)
		return nil, err
	}

	// Wait for the mount to show up, or for the starter to fail.
	deadline := time.Now().Add(30 * time.Second)
	for visible := false; !visible; {
		var err error
		if visible, err = isMountPoint(dir); err != nil {
			return fail(err)
		} else if visible {
			break
		}
		select {
		case <-starterDone:
			// It may have mounted just before exiting: look once more.
			if visible, err = isMountPoint(dir); err != nil {
				return fail(err)
			}
			if !visible || starterErr != nil || k.name == kindFuse2fs {
				return fail(fmt.Errorf("%s: %s exited (%v) without mounting %s: %s", k.name, tool, starterErr, dir, strings.TrimSpace(out.String())))
			}
		default:
		}
		if ctx.Err() != nil {
			return fail(ctx.Err())
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("%s: %s not mounted after 30 s: %s", k.name, dir, strings.TrimSpace(out.String())))
		}
		time.Sleep(200 * time.Microsecond)
	}
	// A FUSE mount is listed before its daemon has answered INIT; the
	// first stat waits for that.
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return fail(fmt.Errorf("%s: stat of the new mount %s: %w", k.name, dir, err))
	}
	elapsed := time.Since(start)

	if k.name != kindFuse2fs {
		// mount(8) and mount.safe exit once the mount is attached.
		select {
		case <-starterDone:
			if starterErr != nil {
				return fail(fmt.Errorf("%s: %s: %v: %s", k.name, tool, starterErr, strings.TrimSpace(out.String())))
			}
		case <-time.After(10 * time.Second):
			return fail(fmt.Errorf("%s: %s still running 10 s after the mount appeared", k.name, tool))
		}
	}
	if k.name == kindSafefs {
		if err := h.adoptSafefsd(m); err != nil {
			return fail(err)
		}
	}
	m.mountMS = float64(elapsed) / float64(time.Millisecond)
	k.readAhead = h.readAhead(dir)
	h.logf("%s: mounted in %v; read-ahead %s", k.name, elapsed.Round(10*time.Microsecond), k.readAhead)
	return m, nil
}

// readAhead describes the read-ahead of the mount at dir and of the loop
// device. A FUSE mount has its own bdi ("MAJ:MIN", or "MAJ:MIN-fuseblk"
// named after the block device for fuseblk); the kernel's ext4 uses the
// loop device's.
func (h *harness) readAhead(dir string) string {
	loop := h.loop.sysfs("queue/read_ahead_kb")
	ms, err := mountsUnder(dir)
	if err != nil || len(ms) == 0 {
		return "unknown"
	}
	m := ms[0]
	bdi := fmt.Sprintf("%d:%d", m.major, m.minor)
	switch {
	case m.fstype == "ext4":
		return fmt.Sprintf("%s KiB (loop device)", loop)
	case strings.HasPrefix(m.fstype, "fuseblk"):
		bdi += "-fuseblk"
	}
	ra, err := os.ReadFile("/sys/class/bdi/" + bdi + "/read_ahead_kb")
	if err != nil {
		return fmt.Sprintf("unknown (%v); loop device %s KiB", err, loop)
	}
	return fmt.Sprintf("%s KiB (bdi %s), loop device %s KiB", strings.TrimSpace(string(ra)), bdi, loop)
}

// adoptSafefsd finds the safefsd that serves m: mount.safe started it and
// exited, so it is now our child (we are a subreaper).
func (h *harness) adoptSafefsd(m *mounted) error {
	var pids []int
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return fmt.Errorf("safefs: finding safefsd: %w", err)
	}
	me := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, state, ppid, err := procStat(pid)
		if err == nil && comm == "safefsd" && ppid == me && state != "Z" {
			pids = append(pids, pid)
		}
	}
	if len(pids) != 1 {
		return fmt.Errorf("safefs: want one safefsd child after the mount, found %d (%v)", len(pids), pids)
	}
	p, err := os.FindProcess(pids[0])
	if err != nil {
		return fmt.Errorf("safefs: safefsd pid %d: %w", pids[0], err)
	}
	m.daemon, m.daemonDone = pids[0], make(chan struct{})
	h.children.Store(pids[0], p)
	go func() {
		st, err := p.Wait()
		switch {
		case err != nil:
			m.daemonErr = fmt.Errorf("waiting for safefsd %d: %w", pids[0], err)
		case !st.Success():
			m.daemonErr = fmt.Errorf("safefsd %d: %v (see the kernel log: dmesg)", pids[0], st)
		}
		close(m.daemonDone)
	}()
	return nil
}

// procStat returns a process's name, state and parent from /proc/PID/stat.
func procStat(pid int) (comm, state string, ppid int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", "", 0, err
	}
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	f := strings.Fields(s[end+1:])
	if open < 0 || end < open || len(f) < 2 {
		return "", "", 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	ppid, err = strconv.Atoi(f[1])
	return s[open+1 : end], f[0], ppid, err
}

// unmount samples the daemon's peak RSS, unmounts, and waits for the daemon
// to exit. A daemon that exits with an error, or does not exit, is an
// error of the run that used the mount.
func (h *harness) unmount(m *mounted) error {
	k := m.kind
	if m.daemon != 0 {
		if hwm, err := vmHWM(m.daemon); err != nil {
			if k.rssErr == nil {
				k.rssErr = err
			}
		} else {
			h.logf("%s: daemon %d VmHWM %.1f MiB before unmount", k.name, m.daemon, float64(hwm)/(1<<20))
			k.peakRSS = max(k.peakRSS, hwm)
		}
	}
	err := unmountDir(m.dir, false)
	if err != nil {
		err = fmt.Errorf("%s: %w", k.name, err)
	}
	if m.daemonDone == nil {
		return err
	}
	select {
	case <-m.daemonDone:
	case <-time.After(10 * time.Second):
		h.killChild(m.daemon)
		<-m.daemonDone
		return errors.Join(err, fmt.Errorf("%s: daemon %d still running 10 s after the unmount; killed it", k.name, m.daemon))
	}
	h.children.Delete(m.daemon)
	if m.daemonErr != nil {
		err = errors.Join(err, fmt.Errorf("%s: daemon exited badly after the unmount: %w", k.name, m.daemonErr))
	}
	return err
}

// forceUnmount ends a mount that failed half-way.
func (h *harness) forceUnmount(m *mounted) {
	if err := unmountDir(m.dir, true); err != nil {
		h.logf("%s: forced unmount: %v", m.kind.name, err)
	}
	if m.daemon != 0 {
		h.killChild(m.daemon)
	}
}

// killChild kills a daemon we started, by its pid.
func (h *harness) killChild(pid int) {
	if p, ok := h.children.Load(pid); ok {
		p.(*os.Process).Kill()
		h.children.Delete(pid)
	}
}

// killChildren kills any daemon still running at cleanup (their mounts are
// gone by then).
func (h *harness) killChildren() {
	h.children.Range(func(key, value any) bool {
		p := value.(*os.Process)
		done := make(chan struct{})
		go func() { p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			p.Kill()
		}
		h.children.Delete(key)
		return true
	})
}

// killOrphans kills what is left of workload commands: processes that
// became our children (we are a subreaper) when their parent was killed,
// such as a fio job process. Daemons we track are left to killChildren,
// after their unmount.
func (h *harness) killOrphans() {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	me := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, tracked := h.children.Load(pid); tracked {
			continue
		}
		if comm, state, ppid, err := procStat(pid); err == nil && ppid == me && state != "Z" {
			h.logf("killing leftover process %d (%s)", pid, comm)
			unix.Kill(pid, unix.SIGKILL)
		}
	}
}

// vmHWM reads a process's peak resident set size, bytes.
func vmHWM(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("daemon peak RSS: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				if err == nil {
					return kb << 10, nil
				}
			}
			return 0, fmt.Errorf("daemon peak RSS: /proc/%d/status: bad line %q", pid, line)
		}
	}
	return 0, fmt.Errorf("daemon peak RSS: /proc/%d/status has no VmHWM", pid)
}

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	dir    string
	major  uint32
	minor  uint32
	fstype string
}

// readMountinfo parses /proc/self/mountinfo.
func readMountinfo() ([]mountEntry, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []mountEntry
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 {
			continue
		}
		e := mountEntry{dir: unescapeMountinfo(f[4])}
		if maj, min, ok := strings.Cut(f[2], ":"); ok {
			a, _ := strconv.ParseUint(maj, 10, 32)
			b, _ := strconv.ParseUint(min, 10, 32)
			e.major, e.minor = uint32(a), uint32(b)
		}
		for i := 6; i < len(f)-1; i++ {
			if f[i] == "-" {
				e.fstype = f[i+1]
				break
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// unescapeMountinfo undoes the octal escapes (\040 and so on) of a
// mountinfo path.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// isMountPoint reports whether dir is in /proc/self/mountinfo.
func isMountPoint(dir string) (bool, error) {
	ms, err := mountsUnder(dir)
	if err != nil {
		return false, err
	}
	for _, m := range ms {
		if m.dir == dir {
			return true, nil
		}
	}
	return false, nil
}

// mountsUnder lists the mounts at dir or below it, deepest (and latest)
// first, the order to unmount them in.
func mountsUnder(dir string) ([]mountEntry, error) {
	all, err := readMountinfo()
	if err != nil {
		return nil, fmt.Errorf("reading /proc/self/mountinfo: %w", err)
	}
	var out []mountEntry
	for i := len(all) - 1; i >= 0; i-- {
		if all[i].dir == dir || strings.HasPrefix(all[i].dir, dir+"/") {
			out = append(out, all[i])
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return len(out[i].dir) > len(out[j].dir) })
	return out, nil
}

// unmountUnder unmounts everything at or below dir.
func unmountUnder(dir string, force bool) error {
	ms, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range ms {
		if err := unmountEntry(m, force); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// unmountDir unmounts whatever is mounted at dir (all of it, if mounts are
// stacked there).
func unmountDir(dir string, force bool) error {
	ms, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range ms {
		if m.dir == dir {
			if err := unmountEntry(m, force); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// unmountEntry unmounts one mount. Without force it retries a busy mount
// for two seconds; then, or at once with force, it aborts the FUSE
// connection (a FUSE unmount waits for the daemon, which may hang) and
// detaches the mount lazily. A lazy detach is still reported as an error:
// something held the mount.
func unmountEntry(m mountEntry, force bool) error {
	if !force {
		var err error
		for i := 0; i < 40; i++ {
			if err = unix.Unmount(m.dir, 0); err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
				return nil
			}
			if !errors.Is(err, unix.EBUSY) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if ferr := forceUnmountEntry(m); ferr != nil {
			return fmt.Errorf("unmounting %s: %v; forcing: %w", m.dir, err, ferr)
		}
		return fmt.Errorf("unmounting %s: %w (aborted and detached it)", m.dir, err)
	}
	return forceUnmountEntry(m)
}

// forceUnmountEntry aborts a FUSE connection and detaches the mount.
func forceUnmountEntry(m mountEntry) error {
	if strings.HasPrefix(m.fstype, "fuse") {
		abort := fmt.Sprintf("/sys/fs/fuse/connections/%d/abort", m.minor)
		if m.major == 0 {
			os.WriteFile(abort, []byte("1"), 0) // best effort: the mount may be gone already
		}
	}
	if err := unix.Unmount(m.dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("detaching %s: %w", m.dir, err)
	}
	return nil
}

// reapStale unmounts what an earlier, killed run of the benchmark left
// mounted: mount points of the form $TMPDIR/safefs-bench-PID-*/ whose PID
// is no longer running. Their loop devices then detach themselves
// (autoclear).
func reapStale(logf func(string, ...any)) {
	all, err := readMountinfo()
	if err != nil {
		return
	}
	prefix := filepath.Join(os.TempDir(), "safefs-bench-")
	roots := map[string]bool{}
	for _, m := range all {
		rest, ok := strings.CutPrefix(m.dir, prefix)
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue // that run is still going
		}
		root, _, _ := strings.Cut(m.dir[len(prefix):], "/")
		roots[prefix+root] = true
	}
	for root := range roots {
		logf("unmounting what a killed run left under %s", root)
		if err := unmountUnder(root, true); err != nil {
			fmt.Fprintf(os.Stderr, "bench: stale mounts under %s: %v\n", root, err)
			continue
		}
		os.RemoveAll(root)
	}
}

// dropCaches writes out dirty data and drops the page cache, dentries and
// inodes: `sync; echo 3 > /proc/sys/vm/drop_caches`.
func dropCaches() error {
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		return fmt.Errorf("dropping caches: %w", err)
	}
	return nil
}

// cleanupStack holds what to undo at the end, last registered first. The
// functions must be safe to run twice: a second signal forces them again
// while a normal cleanup may be running.
type cleanupStack struct {
	mu  sync.Mutex
	fns []cleanupFn
}

type cleanupFn struct {
	name string
	fn   func(force bool) error
}

func (c *cleanupStack) push(name string, fn func(force bool) error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fns = append(c.fns, cleanupFn{name, fn})
}

// run undoes everything, in reverse order, and forgets it.
func (c *cleanupStack) run() error {
	c.mu.Lock()
	fns := append([]cleanupFn(nil), c.fns...)
	c.mu.Unlock()
	var errs []error
	for i := len(fns) - 1; i >= 0; i-- {
		if err := fns[i].fn(false); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", fns[i].name, err))
		}
	}
	c.mu.Lock()
	c.fns = nil
	c.mu.Unlock()
	return errors.Join(errs...)
}

// force undoes everything without waiting for busy mounts.
func (c *cleanupStack) force() {
	c.mu.Lock()
	fns := append([]cleanupFn(nil), c.fns...)
	c.mu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		if err := fns[i].fn(true); err != nil {
			fmt.Fprintf(os.Stderr, "bench: cleanup: %s: %v\n", fns[i].name, err)
		}
	}
}

// lockedBuffer is a bytes.Buffer safe for a process's output and our reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
