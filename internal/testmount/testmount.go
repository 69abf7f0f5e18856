// Package testmount is test support for mounting through safefs the way a
// person does, with bin/mount.safe and bin/safefsd: it builds the
// binaries (make build), runs mount.safe against a control socket the test
// owns, so that each mount's safefsd is a child of the test (its log
// captured, its memory measured, killable at will), and watches mounts:
// mount points, safefsd processes, FUSE connections (aborting a hung one),
// unmounting.
//
// Tests using it need root and /dev/fuse (Require), and their TestMain
// should call Cleanup after m.Run.
package testmount

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Require skips the test unless it can mount: root and /dev/fuse.
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
}

// RepoRoot returns the repository's top directory: the nearest parent of
// the current directory (go test runs in the package's) with a go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for ; dir != "/" && dir != "."; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
	}
	return "", errors.New("testmount: no go.mod above the current directory")
}

var (
	binMu  sync.Mutex
	binDir string
)

// Binaries builds mount.safe and safefsd side by side into a temporary
// directory with `make build BIN=...`, as `make` puts them in bin/ (so
// that mount.safe finds the daemon beside itself), once per process, and
// returns the directory.
func Binaries(t testing.TB) string {
	t.Helper()
	binMu.Lock()
	defer binMu.Unlock()
	if binDir != "" {
		return binDir
	}
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "safefs-bin-")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("make", "-s", "build", "BIN="+dir)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		t.Fatalf("make build BIN=%s: %v\n%s", dir, err, out)
	}
	binDir = dir
	return dir
}

// Cleanup removes the binaries Binaries built.
func Cleanup() {
	binMu.Lock()
	defer binMu.Unlock()
	if binDir != "" {
		os.RemoveAll(binDir)
		binDir = ""
	}
}

// Run runs bin/mount.safe with args and extra environment variables and
// returns its exit status and combined output. A mount.safe still running
// after timeout is killed: the status is then -1 and the output says so.
func Run(t testing.TB, timeout time.Duration, env []string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(Binaries(t), "mount.safe"), args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		return -1, out.String() + fmt.Sprintf("\n(mount.safe killed: still running after %v)", timeout)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), out.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, out.String()
}

// Service is a control socket like /run/safefsd.sock, owned by the test:
// mount.safe reaches it through SAFEFS_SOCKET, and each connection is
// served by a `safefsd --fdpass-fd 3` child of the test (as safefsd.socket
// with Accept=yes would start one), or handed to a handler (Handle).
type Service struct {
	// Sock is the socket's path.
	Sock string

	handle  atomic.Pointer[func(c *net.UnixConn)]
	bin     string
	l       *net.UnixListener
	daemons chan *Daemon
}

// NewService listens on a fresh socket; it stops when the test ends.
func NewService(t testing.TB) *Service {
	t.Helper()
	s := &Service{
		Sock:    filepath.Join(t.TempDir(), "safefsd.sock"),
		bin:     filepath.Join(Binaries(t), "safefsd"),
		daemons: make(chan *Daemon, 16),
	}
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: s.Sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	s.l = l
	go s.accept()
	t.Cleanup(func() { l.Close() })
	return s
}

// Handle makes h take each connection from now on, instead of a daemon:
// for tests that play or relay the daemon's side. h owns the connection.
func (s *Service) Handle(h func(c *net.UnixConn)) { s.handle.Store(&h) }

// Daemon returns the safefsd binary the service starts.
func (s *Service) Daemon() string { return s.bin }

func (s *Service) accept() {
	for {
		c, err := s.l.AcceptUnix()
		if err != nil {
			return
		}
		if h := s.handle.Load(); h != nil {
			go (*h)(c)
			continue
		}
		f, err := c.File()
		c.Close()
		if err != nil {
			continue
		}
		d, err := StartDaemon(s.bin, f)
		f.Close()
		if err != nil {
			continue
		}
		s.daemons <- d
	}
}

// Env is the environment that points mount.safe at the service.
func (s *Service) Env() []string { return []string{"SAFEFS_SOCKET=" + s.Sock} }

// Result is what one run of mount.safe did.
type Result struct {
	Status int    // mount.safe's exit status (-1: killed after a timeout)
	Output string // its combined output
	// Daemon serves the mount (or served the refusal); nil when
	// mount.safe never connected.
	Daemon *Daemon
}

// Mount runs mount.safe SRC DIR ARGS... against the service (at most a
// minute) and returns what happened, with the daemon it talked to.
func (s *Service) Mount(t testing.TB, src, dir string, args ...string) Result {
	t.Helper()
	st, out := Run(t, time.Minute, s.Env(), append([]string{src, dir}, args...)...)
	r := Result{Status: st, Output: out}
	select {
	case r.Daemon = <-s.daemons:
	case <-time.After(200 * time.Millisecond):
	}
	return r
}

// MemoryGuard is the resident size at which a daemon is killed outright
// (and Daemon.OverLimit says so): a daemon that grows without bound must
// fail its test, not the machine.
const MemoryGuard = 2 << 30

// Daemon is a safefsd child of the test.
type Daemon struct {
	Cmd *exec.Cmd
	Pid int

	log   syncBuffer
	done  chan struct{}
	state *os.ProcessState
	over  bool
}

// StartDaemon starts `bin --fdpass-fd 3` with conn as descriptor 3, its
// stderr captured. The caller may close conn afterwards.
func StartDaemon(bin string, conn *os.File) (*Daemon, error) {
	d := &Daemon{done: make(chan struct{})}
	d.Cmd = exec.Command(bin, "--fdpass-fd", "3")
	d.Cmd.ExtraFiles = []*os.File{conn}
	d.Cmd.Stderr = &d.log
	// A test binary that dies must not leave daemons behind.
	d.Cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.Cmd.Start(); err != nil {
		return nil, err
	}
	d.Pid = d.Cmd.Process.Pid
	go func() {
		d.Cmd.Wait()
		d.state = d.Cmd.ProcessState
		close(d.done)
	}()
	go d.guard()
	return d, nil
}

// guard kills the daemon if its resident size passes MemoryGuard.
func (d *Daemon) guard() {
	for {
		select {
		case <-d.done:
			return
		case <-time.After(50 * time.Millisecond):
		}
		if rss, err := statusBytes(d.Pid, "VmRSS"); err == nil && rss > MemoryGuard {
			d.over = true
			d.Cmd.Process.Kill()
			return
		}
	}
}

// OverLimit reports whether the guard killed the daemon for its size.
func (d *Daemon) OverLimit() bool {
	select {
	case <-d.done:
		return d.over
	default:
		return false
	}
}

// Log returns what the daemon has written to stderr so far.
func (d *Daemon) Log() string { return d.log.String() }

// Kill sends SIGKILL.
func (d *Daemon) Kill() { d.Cmd.Process.Signal(syscall.SIGKILL) }

// Wait waits at most timeout for the daemon to exit and returns how it
// ended; nil if it is still running.
func (d *Daemon) Wait(timeout time.Duration) *os.ProcessState {
	select {
	case <-d.done:
		return d.state
	case <-time.After(timeout):
		return nil
	}
}

// Done is closed when the daemon has exited.
func (d *Daemon) Done() <-chan struct{} { return d.done }

// VmHWM returns the daemon's peak resident size in bytes, as the kernel
// counts it (VmHWM in /proc/PID/status); only while it runs.
func (d *Daemon) VmHWM() (int64, error) { return statusBytes(d.Pid, "VmHWM") }

// statusBytes reads a "kB" field of /proc/PID/status.
func statusBytes(pid int, field string) (int64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != field {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/status: %s: %v", pid, field, err)
		}
		return n << 10, nil
	}
	return 0, fmt.Errorf("/proc/%d/status has no %s", pid, field)
}

// syncBuffer is a bytes.Buffer safe for a writer and readers at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// IsMountPoint reports whether something is mounted on dir.
func IsMountPoint(dir string) bool {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// MountInfo returns the /proc/self/mountinfo line of the mount on dir,
// "" if there is none.
func MountInfo(dir string) string {
	data, _ := os.ReadFile("/proc/self/mountinfo")
	line := ""
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == dir {
			line = l
		}
	}
	return line
}

// Unmount unmounts dir, retrying for a while as long as it is busy (a file
// just closed can keep it so for a moment).
func Unmount(dir string) error {
	var err error
	for i := 0; i < 100; i++ {
		if err = unix.Unmount(dir, 0); err != unix.EBUSY {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}

// Conn returns the number of the FUSE connection mounted on dir (its
// directory in /sys/fs/fuse/connections): the minor number of the mount's
// device, read from /proc/self/mountinfo rather than by stat(2), which a
// damaged root inode can make fail.
func Conn(dir string) (uint32, error) {
	f := strings.Fields(MountInfo(dir))
	if len(f) < 3 {
		return 0, fmt.Errorf("nothing is mounted on %s", dir)
	}
	_, minor, ok := strings.Cut(f[2], ":")
	n, err := strconv.ParseUint(minor, 10, 32)
	if !ok || err != nil {
		return 0, fmt.Errorf("mountinfo of %s: bad device %q", dir, f[2])
	}
	return uint32(n), nil
}

var (
	abortedMu sync.Mutex
	aborted   = map[uint32]bool{}
)

// Abort ends FUSE connection conn through the fusectl filesystem (mounting
// it where nothing did: systemd does at boot): every request waiting on
// the daemon fails at once, and later ones fail with ENOTCONN.
func Abort(conn uint32) error {
	abortedMu.Lock()
	aborted[conn] = true
	abortedMu.Unlock()
	const ctl = "/sys/fs/fuse/connections"
	file := fmt.Sprintf("%s/%d/abort", ctl, conn)
	if _, err := os.Stat(file); err != nil {
		unix.Mount("fusectl", ctl, "fusectl", 0, "")
	}
	return os.WriteFile(file, []byte("1"), 0)
}

// Aborted reports whether this process aborted connection conn.
func Aborted(conn uint32) bool {
	abortedMu.Lock()
	defer abortedMu.Unlock()
	return aborted[conn]
}

// AbortedByOthers reports whether a daemon's log shows its connection
// aborted (its reads of /dev/fuse failing with ECONNABORTED, which only
// a write to the connection's fusectl abort file causes) when this
// process never aborted conn: on a machine shared with other tests, one
// that aborts a connection by a number that has since been reused by a
// mount of ours. The daemon then exits with status 1, through no fault of
// its own.
func AbortedByOthers(conn uint32, log string) bool {
	return !Aborted(conn) && strings.Contains(log, "software caused connection abort")
}

// DaemonPIDs lists the live safefsd processes on the machine (zombies
// awaiting their reaper are gone for our purposes). Other mounts'
// daemons count too: prefer a Service's children where it matters.
func DaemonPIDs() []string {
	var pids []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		comm, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err != nil || strings.TrimSpace(string(comm)) != "safefsd" {
			continue
		}
		stat, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if !strings.Contains(string(stat), ") Z ") {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

// DaemonsHolding lists the live safefsd processes that hold path open (the
// image or device they serve): the daemons of one mount, whoever started
// them.
func DaemonsHolding(path string) []int {
	var pids []int
	for _, p := range DaemonPIDs() {
		fds, _ := os.ReadDir(filepath.Join("/proc", p, "fd"))
		for _, fd := range fds {
			if l, err := os.Readlink(filepath.Join("/proc", p, "fd", fd.Name())); err == nil && l == path {
				n, _ := strconv.Atoi(p)
				pids = append(pids, n)
				break
			}
		}
	}
	return pids
}
