package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"safefs/internal/fdpass"
	"safefs/internal/fusemount"
	"safefs/internal/testimg"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testimg.Cleanup()
	for _, dir := range built {
		os.RemoveAll(filepath.Dir(dir))
	}
	os.Exit(code)
}

// built maps build tags to a safefsd built with them.
var built = map[string]string{}

// buildDaemon builds safefsd with the given build tags (once per set).
func buildDaemon(t *testing.T, tags string) string {
	t.Helper()
	if bin, ok := built[tags]; ok {
		return bin
	}
	dir, err := os.MkdirTemp("", "safefsd-test")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "safefsd")
	out, err := exec.Command("go", "build", "-tags", tags, "-o", bin, "safefs/cmd/safefsd").CombinedOutput()
	if err != nil {
		os.RemoveAll(dir)
		t.Fatalf("go build -tags %q safefsd: %v\n%s", tags, err, out)
	}
	built[tags] = bin
	return bin
}

// requireRoot skips tests that play mount.safe: the daemon serves only a
// root peer, and confining it means switching users.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the daemon serves only root, and confining it needs root")
	}
}

// daemon is a `safefsd --fdpass-fd 3` child with the test as its peer,
// playing mount.safe's side of the protocol.
type daemon struct {
	conn   *fdpass.Conn
	cmd    *exec.Cmd
	stderr bytes.Buffer
	done   chan struct{}
	state  *os.ProcessState
}

// startDaemon starts bin as mount.safe's child would be started, with
// sock as the daemon's end of the control socket.
func startDaemon(t *testing.T, bin string, sock *os.File, ours *os.File, env ...string) *daemon {
	t.Helper()
	d := &daemon{done: make(chan struct{})}
	d.cmd = exec.Command(bin, "--fdpass-fd", "3")
	d.cmd.Env = append(os.Environ(), env...)
	d.cmd.ExtraFiles = []*os.File{sock}
	d.cmd.Stderr = &d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sock.Close()
	go func() {
		d.cmd.Wait()
		d.state = d.cmd.ProcessState
		close(d.done)
	}()
	t.Cleanup(func() {
		d.cmd.Process.Kill()
		<-d.done
	})
	conn, err := fdpass.FileConn(ours)
	if err != nil {
		t.Fatal(err)
	}
	conn.Timeout = 10 * time.Second
	d.conn = conn
	return d
}

// socketpair returns the test's and the daemon's end of a control socket.
func socketpair(t *testing.T) (ours, theirs *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return os.NewFile(uintptr(fds[0]), "ours"), os.NewFile(uintptr(fds[1]), "theirs")
}

// start starts a daemon built with tags, peer of a socketpair.
func start(t *testing.T, tags string, env ...string) *daemon {
	t.Helper()
	ours, theirs := socketpair(t)
	return startDaemon(t, buildDaemon(t, tags), theirs, ours, env...)
}

// exit waits for the daemon to end (at most 10 s: it must not hang once
// its peer is gone) and returns how it ended.
func (d *daemon) exit(t *testing.T) *os.ProcessState {
	t.Helper()
	select {
	case <-d.done:
		return d.state
	case <-time.After(10 * time.Second):
		t.Fatalf("safefsd still running 10 s after its peer went away; log:\n%s", d.stderr.String())
		return nil
	}
}

// image is a small ext4 image for the daemon to serve.
func image(t *testing.T) string {
	return testimg.Build(t, testimg.Spec{Name: "daemon", MkfsArgs: []string{"-t", "ext4"}, SizeMB: 8, Tree: testimg.TreeSmall})
}

// hello sends a Hello for img and answers the daemon's request for the
// source with img opened read-only, as mount.safe does.
func (d *daemon) hello(t *testing.T, img string) {
	t.Helper()
	if err := d.conn.Send(&fdpass.Hello{Version: fdpass.Version, FSType: "ext4", Source: img, Target: "/mnt"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.conn.Expect(fdpass.TFileRequest); err != nil {
		t.Fatalf("waiting for the file request: %v\n%s", err, d.stderr.String())
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := d.conn.Send(&fdpass.FileReply{ID: 1}, f); err != nil {
		t.Fatal(err)
	}
}

// TestPeerGoneDuringHandshake closes mount.safe's end of the control
// socket (as its death would) at each step of the handshake: the daemon
// must notice and exit, never hang or serve.
func TestPeerGoneDuringHandshake(t *testing.T) {
	requireRoot(t)
	img := image(t)
	t.Run("before hello", func(t *testing.T) {
		d := start(t, "")
		d.conn.Close()
		if st := d.exit(t); st.ExitCode() != exitFailure {
			t.Errorf("exit %v, want %d", st, exitFailure)
		}
	})
	t.Run("after file request", func(t *testing.T) {
		d := start(t, "")
		d.conn.Send(&fdpass.Hello{Version: fdpass.Version, FSType: "ext4", Source: img, Target: "/mnt"})
		if _, _, err := d.conn.Expect(fdpass.TFileRequest); err != nil {
			t.Fatal(err)
		}
		d.conn.Close()
		if st := d.exit(t); st.ExitCode() != exitFailure {
			t.Errorf("exit %v, want %d", st, exitFailure)
		}
	})
	t.Run("after mount parameters", func(t *testing.T) {
		d := start(t, "")
		d.hello(t, img)
		if _, _, err := d.conn.Expect(fdpass.TMountParams); err != nil {
			t.Fatal(err)
		}
		d.conn.Close()
		if st := d.exit(t); st.ExitCode() != exitFailure {
			t.Errorf("exit %v, want %d", st, exitFailure)
		}
	})
	t.Run("after INIT, before attaching", func(t *testing.T) {
		if _, err := os.Stat("/dev/fuse"); err != nil {
			t.Skip("no /dev/fuse")
		}
		d := start(t, "")
		d.hello(t, img)
		m, _, err := d.conn.Expect(fdpass.TMountParams)
		if err != nil {
			t.Fatal(err)
		}
		p := m.(*fdpass.MountParams)
		fuse, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		fsfd, err := fusemount.Create(fusemount.Config{FuseFD: int(fuse.Fd()), Source: img, Subtype: p.Subtype,
			MaxRead: p.MaxRead, BlockSize: p.BlockSize, ReadOnly: p.ReadOnly})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.conn.Send(&fdpass.FuseDevice{}, fuse); err != nil {
			t.Fatal(err)
		}
		fuse.Close()
		if _, _, err := d.conn.Expect(fdpass.TReady); err != nil {
			t.Fatalf("%v\n%s", err, d.stderr.String())
		}
		// mount.safe dies holding a superblock it never attached:
		// the kernel ends the FUSE connection and the daemon with it.
		d.conn.Close()
		unix.Close(fsfd)
		d.exit(t)
	})
}

// TestNonRootPeer checks that the daemon refuses a peer that is not root,
// with a reason, before reading anything.
func TestNonRootPeer(t *testing.T) {
	requireRoot(t)
	// SO_PEERCRED records the effective uid of whoever made the socket
	// pair. Switch only this thread (a raw setresuid, not Go's
	// process-wide one), keeping root as the saved uid to come back.
	runtime.LockOSThread()
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), 65534, ^uintptr(0)); e != 0 {
		runtime.UnlockOSThread()
		t.Fatalf("setresuid: %v", e)
	}
	ours, theirs := socketpair(t)
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), 0, ^uintptr(0)); e != 0 {
		// Leave the thread locked: it dies with this goroutine.
		t.Fatalf("setresuid back to root: %v", e)
	}
	runtime.UnlockOSThread()
	d := startDaemon(t, buildDaemon(t, ""), theirs, ours)
	_, _, err := d.conn.Expect(fdpass.TFileRequest)
	var pe *fdpass.PeerError
	if !errors.As(err, &pe) || !strings.Contains(pe.Message, "only root") || !strings.Contains(pe.Message, "uid 65534") {
		t.Errorf("got %v, want a refusal naming uid 65534", err)
	}
	if st := d.exit(t); st.ExitCode() != exitFailure {
		t.Errorf("exit %v, want %d", st, exitFailure)
	}
}

// TestSandboxHolds runs a test build of the daemon that, once confined,
// tries to escape (see probe_sandboxprobe.go): opening a file fails with
// EACCES, and every system call off the allow-list kills the daemon with
// SIGSYS before it returns.
func TestSandboxHolds(t *testing.T) {
	requireRoot(t)
	img := image(t)
	// The probe build without a probe serves as usual: the harness can
	// tell a daemon that goes on from one that was stopped.
	t.Run("none", func(t *testing.T) {
		d := start(t, "sandboxprobe")
		d.hello(t, img)
		if _, _, err := d.conn.Expect(fdpass.TMountParams); err != nil {
			t.Fatalf("%v\n%s", err, d.stderr.String())
		}
	})
	t.Run("open", func(t *testing.T) {
		d := start(t, "sandboxprobe", "SAFEFSD_PROBE=open")
		d.hello(t, img)
		_, _, err := d.conn.Expect(fdpass.TMountParams)
		var pe *fdpass.PeerError
		if !errors.As(err, &pe) || !strings.Contains(pe.Message, "sandbox probe open") || !strings.Contains(pe.Message, "permission denied") {
			t.Errorf("got %v, want the open probe to fail with permission denied", err)
		}
		d.exit(t)
	})
	for _, probe := range []string{"socket", "execve", "mount", "ptrace", "setuid", "fork", "tiocsti"} {
		t.Run(probe, func(t *testing.T) {
			d := start(t, "sandboxprobe", "SAFEFSD_PROBE="+probe)
			d.hello(t, img)
			m, _, err := d.conn.Recv()
			st := d.exit(t)
			ws, _ := st.Sys().(syscall.WaitStatus)
			if !ws.Signaled() || ws.Signal() != syscall.SIGSYS {
				t.Errorf("%s: the daemon ended with %v (message %v, %v), want killed by SIGSYS; log:\n%s", probe, st, m, err, d.stderr.String())
			}
		})
	}
}
