package fusefs_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"safefs/internal/ext4"
	"safefs/internal/fusefs"
	"safefs/internal/fuseloop"
	"safefs/internal/fusemount"
	"safefs/internal/testimg"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testimg.Cleanup()
	if daemonDir != "" {
		os.RemoveAll(daemonDir)
	}
	os.Exit(code)
}

// requireFUSE skips the test unless it can create FUSE mounts: root and
// /dev/fuse. (Until mount.safe exists the tests mount for themselves.)
func requireFUSE(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting FUSE filesystems needs root")
	}
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no usable /dev/fuse: %v", err)
	}
	unix.Close(fd)
}

// mountConfig says how mountImage serves and mounts an image.
type mountConfig struct {
	// readWrite leaves out the read-only mount flags, so that requests
	// to change something reach the server, which must refuse them.
	readWrite bool
	// daemon, if set, is a safefsd binary to serve the mount from a child
	// process; otherwise the server runs in this process.
	daemon string
	// wrapDevice, if set, wraps the image file before the in-process
	// server's ext4.Open (before LimitDevice).
	wrapDevice func(io.ReaderAt) io.ReaderAt
	// maxDeviceReads is passed to LimitDevice (0: the default).
	maxDeviceReads int
	// blockCacheBytes sets ext4.Options.BlockCacheBytes (0: the default).
	blockCacheBytes int
	// wrapFS, if set, wraps the in-process server's filesystem, e.g. to
	// count requests.
	wrapFS func(*fusefs.FS) fuse.RawFileSystem
}

// fuseMount is a mounted FUSE filesystem served by fusefs.
type fuseMount struct {
	Dir string

	logs    logSink
	done    chan struct{} // closed when the server has returned
	cmd     *exec.Cmd     // the daemon, if served from a child
	stderr  bytes.Buffer  // the daemon's stderr
	waitErr error         // the daemon's exit, once done is closed
	conn    uint32        // the connection's number in /sys/fs/fuse/connections
	once    sync.Once
	cleanup []func()
}

// logSink collects the server's log lines.
type logSink struct {
	mu    sync.Mutex
	lines []string
}

func (s *logSink) logf(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lines = append(s.lines, fmt.Sprintf(format, args...))
}

// Lines returns the log lines so far.
func (s *logSink) Lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lines...)
}

// mountImage serves img through fusefs and mounts it on a fresh directory
// the way mount.safe will: /dev/fuse is opened here, the superblock is
// created with the new mount API (which makes the kernel send INIT), INIT
// is answered, and only then is the mount attached with fsmount and
// move_mount. The mount is unmounted when the test ends, if it is not
// before.
func mountImage(t testing.TB, img string, cfg mountConfig) *fuseMount {
	t.Helper()
	requireFUSE(t)
	m := &fuseMount{Dir: t.TempDir(), done: make(chan struct{})}
	fail := func(format string, args ...any) {
		t.Helper()
		for i := len(m.cleanup) - 1; i >= 0; i-- {
			m.cleanup[i]()
		}
		t.Fatalf(format, args...)
	}

	fuseFD, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open /dev/fuse: %v", err)
	}
	fuseOwned := true // until a server owns it
	m.cleanup = append(m.cleanup, func() {
		if fuseOwned {
			unix.Close(fuseFD)
		}
	})
	fsfd, err := fusemount.Create(fusemount.Config{
		FuseFD: fuseFD, Source: img, Subtype: "ext4",
		MaxRead: fusefs.MaxRequest, ReadOnly: !cfg.readWrite,
	})
	if err != nil {
		fail("%v", err)
	}
	m.cleanup = append(m.cleanup, func() { unix.Close(fsfd) })

	if cfg.daemon == "" {
		m.serveInProcess(t, img, fuseFD, cfg, fail)
	} else {
		m.serveChild(t, img, fuseFD, cfg.daemon, fail)
	}
	fuseOwned = false

	attrs := unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV
	if !cfg.readWrite {
		attrs |= unix.MOUNT_ATTR_RDONLY
	}
	// On failure the cleanup closes the detached superblock, which ends
	// the FUSE connection and so the server.
	if err := fusemount.Attach(fsfd, m.Dir, attrs); err != nil {
		fail("%v", err)
	}
	for i := len(m.cleanup) - 1; i >= 0; i-- {
		m.cleanup[i]()
	}
	m.cleanup = nil

	var st unix.Stat_t
	if err := unix.Stat(m.Dir, &st); err != nil {
		m.Unmount(t)
		t.Fatalf("stat %s: %v", m.Dir, err)
	}
	m.conn = unix.Minor(st.Dev)
	// Buffered reads use 1 MiB requests only if the mount's read-ahead
	// allows it (128 KiB by default); mount.safe does the same.
	if err := fusemount.RaiseReadAhead(m.Dir, fusefs.MaxRequest>>10); err != nil {
		t.Logf("raising read-ahead: %v", err)
	}
	t.Cleanup(func() { m.Unmount(t) })
	if cfg.daemon == "" {
		m.pollHack(t)
	}
	return m
}

// pollHack makes the kernel ask the server FUSE_POLL once, which go-fuse
// answers ENOSYS, so that the kernel never asks again. A server in the
// same process as its clients needs this: os.Open registers every file
// with the runtime's epoll, epoll_ctl on a FUSE file sends FUSE_POLL and
// waits for the answer, and the runtime makes that call without giving up
// its P. With GOMAXPROCS such opens at once, no P is left to run the
// server's goroutine that would answer, and the process deadlocks.
// go-fuse does this in WaitMount, but not for /dev/fd/N mounts, whose
// path it does not know. safefsd runs in its own process and does not
// need it. The name is one go-fuse answers itself (a fake file in the
// root); the calls here are raw system calls, which do give up their P.
func (m *fuseMount) pollHack(t testing.TB) {
	t.Helper()
	fd, err := syscall.Open(filepath.Join(m.Dir, ".go-fuse-epoll-hack"), syscall.O_RDONLY, 0)
	if err != nil {
		t.Fatalf("poll hack: %v", err)
	}
	unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
	syscall.Close(fd)
}

func (m *fuseMount) serveInProcess(t testing.TB, img string, fuseFD int, cfg mountConfig, fail func(string, ...any)) {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		fail("%v", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		fail("%v", err)
	}
	var dev io.ReaderAt = f
	if cfg.wrapDevice != nil {
		dev = cfg.wrapDevice(dev)
	}
	errs := fusefs.NewErrorLog(m.logs.logf)
	fsys, err := ext4.Open(fusefs.LimitDevice(dev, cfg.maxDeviceReads), &ext4.Options{
		DeviceSize:      st.Size(),
		Report:          errs.Report,
		BlockCacheBytes: cfg.blockCacheBytes,
	})
	if err != nil {
		f.Close()
		fail("ext4.Open %s: %v", img, err)
	}
	opts := fusefs.Options{Logf: m.logs.logf, Errors: errs}
	var srv *fuseloop.Loop
	if cfg.wrapFS == nil {
		srv, err = fusefs.NewServer(fuseFD, fsys, opts)
	} else {
		fs := fusefs.New(fsys, opts)
		srv, err = fuseloop.New(fuseFD, cfg.wrapFS(fs), fs.MountOptions(), fuseloop.Options{Logf: m.logs.logf})
	}
	if err != nil {
		f.Close()
		fail("%v", err)
	}
	go func() {
		defer close(m.done)
		defer f.Close()
		srv.Serve()
	}()
}

func (m *fuseMount) serveChild(t testing.TB, img string, fuseFD int, daemon string, fail func(string, ...any)) {
	t.Helper()
	fuse := os.NewFile(uintptr(fuseFD), "/dev/fuse")
	m.cmd = exec.Command(daemon, "--fuse-fd", "3", "--device", img)
	m.cmd.ExtraFiles = []*os.File{fuse} // descriptor 3 in the child
	m.cmd.Stderr = &m.stderr
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err := m.cmd.Start()
	// The daemon holds the only descriptor from now on: if it dies, the
	// kernel ends the connection instead of waiting for a server that
	// this process would still seem to be.
	fuse.Close()
	if err != nil {
		fail("starting %s: %v", daemon, err)
	}
	go func() {
		m.waitErr = m.cmd.Wait()
		close(m.done)
	}()
}

// Unmount unmounts and waits for the server to return (the daemon to
// exit). A mount still busy after a few seconds is detached and its
// connection aborted, and the test fails.
func (m *fuseMount) Unmount(t testing.TB) {
	t.Helper()
	m.once.Do(func() {
		var err error
		for i := 0; i < 100; i++ {
			if err = unix.Unmount(m.Dir, 0); err != unix.EBUSY {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Errorf("unmount %s: %v; detaching", m.Dir, err)
			unix.Unmount(m.Dir, unix.MNT_DETACH)
			m.abort()
		}
		select {
		case <-m.done:
			return
		case <-time.After(10 * time.Second):
		}
		t.Errorf("server still running 10s after unmount; aborting the connection")
		m.abort()
		select {
		case <-m.done:
		case <-time.After(10 * time.Second):
			t.Errorf("server still running after the connection was aborted")
		}
	})
}

// abort ends the FUSE connection through the fusectl filesystem, mounting
// it first where nothing did (systemd does at boot). Only a failing test
// gets here.
func (m *fuseMount) abort() {
	const ctl = "/sys/fs/fuse/connections"
	file := fmt.Sprintf("%s/%d/abort", ctl, m.conn)
	if _, err := os.Stat(file); err != nil {
		unix.Mount("fusectl", ctl, "fusectl", 0, "")
	}
	os.WriteFile(file, []byte("1"), 0)
}

// Wait returns the daemon's exit error once it has exited.
func (m *fuseMount) Wait() error {
	<-m.done
	return m.waitErr
}

// kernelMount mounts img read-only with the kernel's ext4 on a read-only
// loop device, as testimg.KernelWalk does, and runs fn on the mount point:
// one mount for the walk, statfs and flags together, because some images
// (mmp) take seconds to mount.
func kernelMount(t testing.TB, img string, fn func(dir string)) {
	t.Helper()
	testimg.RequireKernelMount(t)
	out, err := exec.Command("losetup", "-f", "--show", "-r", img).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup -r %s: %v: %s", img, err, out)
	}
	loop := strings.TrimSpace(string(out))
	defer func() {
		if out, err := exec.Command("losetup", "-d", loop).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", loop, err, out)
		}
	}()
	dir := t.TempDir()
	opts := "ro,nodev,nosuid,noexec"
	if hasJournal(t, img) {
		opts += ",noload" // not even a journal replay may change what is read
	}
	if out, err := exec.Command("mount", "-t", "ext4", "-o", opts, loop, dir).CombinedOutput(); err != nil {
		t.Fatalf("mount %s (%s): %v: %s", loop, img, err, out)
	}
	defer func() {
		var err error
		for i := 0; i < 100; i++ {
			if err = unix.Unmount(dir, 0); err != unix.EBUSY {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Errorf("unmount %s: %v", dir, err)
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	}()
	fn(dir)
}

func hasJournal(t testing.TB, img string) bool {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fsys, err := ext4.Open(f, &ext4.Options{NoRecovery: true})
	if err != nil {
		t.Fatalf("%s: %v", img, err)
	}
	return fsys.Superblock().HasCompat(ext4.CompatHasJournal)
}

// specs returns the images of the matrix the kernel can mount, without
// the 100,000-entry directories in -short mode.
func specs() []testimg.Spec {
	var out []testimg.Spec
	for _, s := range testimg.Matrix() {
		big := s.Tree == testimg.TreeLargeDir || s.Tree == testimg.TreeLargeDirLong
		if s.NoKernel || testing.Short() && big {
			continue
		}
		out = append(out, s)
	}
	return out
}

// daemonDir holds the safefsd binary the tests built, removed by TestMain.
var daemonDir string

// buildDaemon builds safefsd into a temporary directory, once per
// process.
var buildDaemon = sync.OnceValues(func() (string, error) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		// go test does not put its own go command in PATH.
		goCmd = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	dir, err := os.MkdirTemp("", "safefsd-test-")
	if err != nil {
		return "", err
	}
	daemonDir = dir
	bin := filepath.Join(dir, "safefsd")
	out, err := exec.Command(goCmd, "build", "-o", bin, "safefs/cmd/safefsd").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build safefsd: %v\n%s", err, out)
	}
	return bin, nil
})

func daemonBinary(t testing.TB) string {
	t.Helper()
	bin, err := buildDaemon()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// errnoOf extracts the errno of a failed system call.
func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return 0
}
