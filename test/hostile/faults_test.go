package hostile

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"safefs/internal/fdpass"
	"safefs/internal/testimg"
	"safefs/internal/testmount"
)

// relay stands between mount.safe and a real safefsd on a service's
// connection: it starts the daemon as the service would, passes every
// message and descriptor on, and shows each message to at first, which
// decides whether to pass it on and whether to end the exchange there
// (after killing whichever process the test kills): the relay then
// closes both connections, as that death would.
type relay struct {
	bin string
	at  func(toDaemon bool, m fdpass.Message, d *testmount.Daemon) (pass, stop bool)
	// daemons receives each daemon started.
	daemons chan *testmount.Daemon
}

func newRelay(t *testing.T, svc *testmount.Service, at func(toDaemon bool, m fdpass.Message, d *testmount.Daemon) (pass, stop bool)) *relay {
	r := &relay{bin: svc.Daemon(), at: at, daemons: make(chan *testmount.Daemon, 4)}
	svc.Handle(r.handle)
	return r
}

func (r *relay) handle(c *net.UnixConn) {
	helper := fdpass.NewConn(c)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		helper.Close()
		return
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "relay"), os.NewFile(uintptr(fds[1]), "daemon")
	d, err := testmount.StartDaemon(r.bin, theirs)
	theirs.Close()
	if err != nil {
		ours.Close()
		helper.Close()
		return
	}
	r.daemons <- d
	daemon, err := fdpass.FileConn(ours)
	if err != nil {
		helper.Close()
		return
	}
	helper.Timeout, daemon.Timeout = time.Minute, time.Minute
	var once sync.Once
	end := func() {
		once.Do(func() {
			// Shut down first: that takes effect at once, where a
			// close waits for the other goroutine's read to return,
			// and the peer may meanwhile send as if this end lived.
			for _, c := range []*fdpass.Conn{helper, daemon} {
				c.UnixConn().CloseRead()
				c.UnixConn().CloseWrite()
				c.Close()
			}
		})
	}
	pass := func(from, to *fdpass.Conn, toDaemon bool) {
		defer end()
		for {
			m, files, err := from.Recv()
			if err != nil {
				return
			}
			pass, stop := r.at(toDaemon, m, d)
			if pass {
				err = to.Send(m, files...)
			}
			for _, f := range files {
				f.Close()
			}
			if stop || err != nil {
				return
			}
		}
	}
	go pass(daemon, helper, false)
	pass(helper, daemon, true)
}

// handshakeStage is a point of the mount.safe/safefsd exchange: the
// message seen, in which direction, and whether it is passed on before
// the kill.
type handshakeStage struct {
	name     string
	toDaemon bool
	msg      fdpass.Type
	passed   bool
}

var handshakeStages = []handshakeStage{
	{"asking for the source", false, fdpass.TFileRequest, false},
	{"opening the filesystem", true, fdpass.TFileReply, true},
	{"accepting the filesystem", false, fdpass.TMountParams, false},
	{"while mount.safe creates the mount", false, fdpass.TMountParams, true},
	{"answering INIT", true, fdpass.TFuseDevice, true},
}

// TestDaemonKilled kills the daemon with SIGKILL during the handshake
// (at each step), during a directory walk and during a large read.
// During the handshake, mount.safe must exit with an error and leave
// nothing mounted; once mounted, every request must fail with ENOTCONN
// (or ECONNABORTED, for those in flight) instead of hanging, umount must
// work, and nothing may be left running.
func TestDaemonKilled(t *testing.T) {
	testmount.Require(t)
	t.Parallel()
	img := testimg.Build(t, testimg.Spec{Name: "faults", MkfsArgs: []string{"-t", "ext4"}, SizeMB: 16, Tree: testimg.TreeSmall})
	unchanged(t, img)
	for _, s := range handshakeStages {
		t.Run(s.name, func(t *testing.T) {
			svc := testmount.NewService(t)
			r := newRelay(t, svc, func(toDaemon bool, m fdpass.Message, d *testmount.Daemon) (bool, bool) {
				if toDaemon != s.toDaemon || m.Type() != s.msg {
					return true, false
				}
				if !s.passed {
					kill(t, d)
					return false, true
				}
				// Pass the message on first, and kill the daemon as
				// it gets to work on it.
				go kill(t, d)
				return true, true
			})
			dir := t.TempDir()
			res := svc.Mount(t, img, dir, "-o", "ro")
			if res.Status != 32 || !strings.Contains(res.Output, img) || !strings.Contains(res.Output, "daemon") {
				t.Errorf("mount.safe exited %d, want 32 and a message naming %s and the daemon:\n%s", res.Status, img, res.Output)
			}
			if testmount.IsMountPoint(dir) {
				unix.Unmount(dir, unix.MNT_DETACH)
				t.Errorf("something was left mounted on %s", dir)
			}
			checkKilled(t, <-r.daemons)
		})
	}
	t.Run("after Ready", func(t *testing.T) {
		// The daemon dies after saying it answered INIT: mount.safe
		// attaches the mount before it can know. What it asks of the
		// mount meanwhile must fail at once, not hang; when it finds
		// the daemon gone as it says goodbye it takes the mount away
		// again and fails, and if the daemon's end of the connection
		// closes only after that, the mount stays, answering ENOTCONN,
		// and unmounts.
		svc := testmount.NewService(t)
		r := newRelay(t, svc, func(toDaemon bool, m fdpass.Message, d *testmount.Daemon) (bool, bool) {
			if m.Type() != fdpass.TReady {
				return true, false
			}
			// Ready goes on, and the connection ends right behind
			// it, as the dead daemon's socket would.
			kill(t, d)
			return true, true
		})
		dir := t.TempDir()
		res := svc.Mount(t, img, dir, "-o", "ro")
		checkKilled(t, <-r.daemons)
		switch {
		case res.Status == 32 && strings.Contains(res.Output, "daemon stopped"):
			if testmount.IsMountPoint(dir) {
				t.Errorf("mount.safe failed, but left a mount with a dead daemon on %s", dir)
				deadMount(t, dir)
			}
		case res.Status == 0:
			t.Logf("mount.safe said goodbye before the connection ended: checking the dead mount")
			deadMount(t, dir)
		default:
			t.Errorf("mount.safe exited %d, want 32 and a message about the daemon, or 0:\n%s", res.Status, res.Output)
		}
	})

	t.Run("during a directory walk", func(t *testing.T) {
		img := testimg.Build(t, testimg.SpecNamed(t, "ext4-largedir"))
		killDuring(t, img, func(dir string, progress *atomic.Int64) error {
			lim := defaultLimits
			lim.progress = progress
			res := walkMount(dir, lim, func() {})
			if len(res.hung) > 0 {
				return errors.New("hung: " + strings.Join(res.hung, ", "))
			}
			if !res.lost {
				return errors.New("the walk did not see the connection end")
			}
			for e := range res.errs {
				if e != unix.ENOTCONN && e != unix.ECONNABORTED {
					return errors.New("the walk failed with " + res.errSummary() + ", want only ENOTCONN and ECONNABORTED; first: " + strings.Join(res.firstErrs, "; "))
				}
			}
			return nil
		}, 20000)
	})
	t.Run("during a large read", func(t *testing.T) {
		img := testimg.Build(t, testimg.SpecNamed(t, "ext4-default"))
		killDuring(t, img, func(dir string, progress *atomic.Int64) error {
			// 300 MiB, mostly holes: the daemon serves every byte.
			f, err := os.Open(filepath.Join(dir, "sparse", "scattered"))
			if err != nil {
				return err
			}
			defer f.Close()
			buf := make([]byte, 1<<20)
			for off := int64(0); ; {
				n, err := f.ReadAt(buf, off)
				off += int64(n)
				progress.Store(off >> 20)
				switch {
				case errors.Is(err, unix.ENOTCONN) || errors.Is(err, unix.ECONNABORTED):
					return nil
				case err != nil:
					return err // io.EOF: read to the end, never cut
				}
			}
		}, 32)
	})
}

// unchanged checks, when the test ends, that img's SHA-256 is what it
// is now.
func unchanged(t *testing.T, img string) {
	before := sha256File(t, img)
	t.Cleanup(func() {
		if after := sha256File(t, img); after != before {
			t.Errorf("%s was written: sha256 %s before, %s after", img, before, after)
		}
	})
}

// kill kills the daemon and waits for it to be gone.
func kill(t *testing.T, d *testmount.Daemon) {
	d.Kill()
	if d.Wait(10*time.Second) == nil {
		t.Errorf("safefsd (pid %d) still running 10 s after SIGKILL", d.Pid)
	}
}

// checkKilled checks that the daemon ended by SIGKILL (not by a panic or
// an exit of its own before the kill).
func checkKilled(t *testing.T, d *testmount.Daemon) {
	t.Helper()
	st := d.Wait(10 * time.Second)
	if st == nil {
		t.Errorf("safefsd still running")
		return
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("safefsd ended with %v before it was killed; log:\n%s", st, d.Log())
	}
}

// deadMount checks that a mount whose daemon has died answers ENOTCONN
// at once (statfs: a request the kernel never answers from its caches)
// and can be unmounted.
func deadMount(t *testing.T, dir string) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		var st unix.Statfs_t
		done <- unix.Statfs(dir, &st)
	}()
	select {
	case err := <-done:
		if !errors.Is(err, unix.ENOTCONN) {
			t.Errorf("statfs %s with its daemon dead: %v, want ENOTCONN", dir, err)
		}
	case <-time.After(defaultLimits.opTimeout):
		t.Errorf("statfs %s with its daemon dead hangs", dir)
		if conn, err := testmount.Conn(dir); err == nil {
			testmount.Abort(conn)
		}
	}
	if err := testmount.Unmount(dir); err != nil {
		t.Errorf("umount %s: %v", dir, err)
		unix.Unmount(dir, unix.MNT_DETACH)
	}
}

// killDuring mounts img, runs work on the mount in the background, and
// kills the daemon once work has made progress: work must then end on its
// own (it returns an error for anything but a clean end of the
// connection), the mount must answer ENOTCONN and unmount, and no daemon
// may be left holding the image.
func killDuring(t *testing.T, img string, work func(dir string, progress *atomic.Int64) error, after int64) {
	t.Helper()
	svc := testmount.NewService(t)
	unchanged(t, img)
	dir := t.TempDir()
	res := svc.Mount(t, img, dir, "-o", "ro")
	if res.Status != 0 || res.Daemon == nil {
		t.Fatalf("mount.safe exited %d:\n%s", res.Status, res.Output)
	}
	var progress atomic.Int64
	done := make(chan error, 1)
	go func() { done <- work(dir, &progress) }()
	for progress.Load() < after {
		select {
		case err := <-done:
			unix.Unmount(dir, unix.MNT_DETACH)
			t.Fatalf("the work ended before the kill: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	start := time.Now()
	res.Daemon.Kill()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("after the kill: %v", err)
		}
		t.Logf("killed at %d; the work ended %v after the kill", progress.Load(), time.Since(start).Round(time.Millisecond))
	case <-time.After(2 * defaultLimits.opTimeout):
		t.Errorf("the work still runs %v after the daemon was killed", 2*defaultLimits.opTimeout)
		if conn, err := testmount.Conn(dir); err == nil {
			testmount.Abort(conn)
		}
		<-done
	}
	checkKilled(t, res.Daemon)
	deadMount(t, dir)
	if pids := testmount.DaemonsHolding(img); len(pids) > 0 {
		t.Errorf("safefsd processes %v still hold %s", pids, img)
	}
}

// TestHelperKilled kills mount.safe with SIGKILL at each step of the
// handshake: the daemon must notice and exit, and nothing may be left
// mounted.
func TestHelperKilled(t *testing.T) {
	testmount.Require(t)
	t.Parallel()
	img := testimg.Build(t, testimg.Spec{Name: "faults", MkfsArgs: []string{"-t", "ext4"}, SizeMB: 16, Tree: testimg.TreeSmall})
	unchanged(t, img)
	stages := append(handshakeStages[:len(handshakeStages):len(handshakeStages)],
		handshakeStage{"after Ready, before attaching", false, fdpass.TReady, false})
	for _, s := range stages {
		t.Run(s.name, func(t *testing.T) {
			svc := testmount.NewService(t)
			var helper atomic.Pointer[os.Process]
			r := newRelay(t, svc, func(toDaemon bool, m fdpass.Message, d *testmount.Daemon) (bool, bool) {
				if toDaemon != s.toDaemon || m.Type() != s.msg {
					return true, false
				}
				p := helper.Load()
				for p == nil { // mount.safe has only just started
					time.Sleep(time.Millisecond)
					p = helper.Load()
				}
				if s.passed {
					go p.Kill()
				} else {
					p.Kill()
				}
				return s.passed, true
			})
			dir := t.TempDir()
			cmd := exec.Command(filepath.Join(testmount.Binaries(t), "mount.safe"), img, dir, "-o", "ro")
			cmd.Env = append(os.Environ(), svc.Env()...)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			helper.Store(cmd.Process)
			waited := make(chan error, 1)
			go func() { waited <- cmd.Wait() }()
			select {
			case err := <-waited:
				if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
					t.Errorf("mount.safe ended with %v before it was killed:\n%s", err, out.String())
				}
			case <-time.After(time.Minute):
				cmd.Process.Kill()
				t.Fatalf("mount.safe still running after a minute:\n%s", out.String())
			}
			d := <-r.daemons
			if st := d.Wait(10 * time.Second); st == nil {
				t.Errorf("safefsd still running 10 s after mount.safe was killed; log:\n%s", d.Log())
				d.Kill()
			} else if ws, _ := st.Sys().(syscall.WaitStatus); ws.Signaled() {
				t.Errorf("safefsd ended with %v; log:\n%s", st, d.Log())
			}
			checkLog(t, s.name, d.Log())
			if testmount.IsMountPoint(dir) {
				unix.Unmount(dir, unix.MNT_DETACH)
				t.Errorf("something was left mounted on %s", dir)
			}
		})
	}
}
