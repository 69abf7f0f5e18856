package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"safefs/internal/fdpass"
	"safefs/internal/sandbox"
	"safefs/internal/testimg"
	"safefs/internal/testmount"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testimg.Cleanup()
	testmount.Cleanup()
	os.Exit(code)
}

func requireMount(t *testing.T) {
	t.Helper()
	testmount.Require(t)
	if _, err := os.Stat(socketPath); err == nil {
		t.Skipf("%s exists: these tests exercise the spawn mode", socketPath)
	}
}

// runMount runs bin/mount.safe with args and returns its exit status and
// combined output.
func runMount(t *testing.T, args ...string) (int, string) {
	t.Helper()
	return runMountEnv(t, nil, args...)
}

// runMountEnv is runMount with extra environment variables.
func runMountEnv(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	return testmount.Run(t, 2*time.Minute, env, args...)
}

// TestSpawnMount mounts an image with no service installed (mount.safe
// starts safefsd itself), compares the mount with the kernel's view,
// checks /proc/mounts, unmounts, and checks that the daemon went away.
func TestSpawnMount(t *testing.T) {
	requireMount(t)
	img := testimg.Build(t, testimg.Spec{Name: "spawn", MkfsArgs: []string{"-t", "ext4"}, SizeMB: 64, Tree: testimg.TreeFull, NeedsRoot: true, Htree: true})
	dir := t.TempDir()
	st, out := runMount(t, img, dir, "-o", "ro")
	if st != 0 {
		t.Fatalf("mount.safe exited %d:\n%s", st, out)
	}
	mounted := true
	defer func() {
		if mounted {
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	}()
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	var line string
	for _, l := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == dir {
			line = l
		}
	}
	for _, want := range []string{" - fuse.ext4 " + img, "nosuid", "nodev", "ro"} {
		if !strings.Contains(line, want) {
			t.Errorf("mountinfo line %q lacks %q", line, want)
		}
	}
	// The daemon serving the mount is confined.
	pid := daemonPID(t, img)
	ds, err := sandbox.ReadStatus(filepath.Join("/proc", pid, "status"))
	if err != nil {
		t.Fatal(err)
	}
	if ds.Uid == 0 || ds.Gid == 0 || ds.CapEff != 0 || !ds.NoNewPrivs || !ds.Seccomp {
		t.Errorf("daemon %s is not confined: %+v", pid, ds)
	}
	got := testimg.Walk(t, dir)
	want := testimg.KernelWalk(t, img)
	testimg.Compare(t, want, got, testimg.CompareOpts{})

	if err := unix.Unmount(dir, 0); err != nil {
		t.Fatalf("umount: %v", err)
	}
	mounted = false
	// The daemon exits once the kernel ends the connection.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if len(testmount.DaemonsHolding(img)) == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("safefsd still running 10 s after unmount")
}

// daemonPID returns the pid of the safefsd serving img. Daemons are
// found by the image they hold, not by name alone: other tests may run
// their own at the same time.
func daemonPID(t *testing.T, img string) string {
	t.Helper()
	pids := testmount.DaemonsHolding(img)
	if len(pids) != 1 {
		t.Fatalf("%d safefsd processes hold %s, want 1", len(pids), img)
	}
	return strconv.Itoa(pids[0])
}

// TestFailures checks that each failure leaves nothing mounted, exits with
// mount(8)'s status, and names the source and the reason.
func TestFailures(t *testing.T) {
	requireMount(t)
	dir := t.TempDir()
	notExt4 := filepath.Join(t.TempDir(), "random.img")
	os.WriteFile(notExt4, bytes.Repeat([]byte{0x5a}, 1<<20), 0o644)
	img := testimg.Build(t, testimg.Spec{Name: "fail", MkfsArgs: []string{"-t", "ext4"}, SizeMB: 16, Tree: testimg.TreeSmall})
	data, _ := os.ReadFile(img)
	truncated := filepath.Join(t.TempDir(), "truncated.img")
	os.WriteFile(truncated, data[:len(data)/2], 0o644)
	file := filepath.Join(t.TempDir(), "plain")
	os.WriteFile(file, nil, 0o644)
	noRoot := filepath.Join(t.TempDir(), "noroot.img")
	os.WriteFile(noRoot, data, 0o644)
	if out, err := exec.Command("debugfs", "-w", "-R", "clri <2>", noRoot).CombinedOutput(); err != nil {
		t.Fatalf("debugfs clri <2>: %v: %s", err, out)
	}
	cases := []struct {
		name   string
		args   []string
		status int
		says   []string
	}{
		{"not ext4", []string{notExt4, dir}, exitFailure, []string{notExt4, "no ext2/ext3/ext4 superblock"}},
		{"truncated", []string{truncated, dir}, exitFailure, []string{truncated, "truncated"}},
		{"unknown option", []string{img, dir, "-o", "ro,bogus"}, exitUsage, []string{"bogus"}},
		{"missing source", []string{"/nonexistent/img", dir}, exitFailure, []string{"/nonexistent/img", "no such file"}},
		{"target not a directory", []string{img, file}, exitFailure, []string{file, "not a directory"}},
		{"character device", []string{"/dev/null", dir}, exitFailure, []string{"/dev/null", "not a block device or a regular file"}},
		{"damaged root", []string{noRoot, dir}, exitFailure, []string{noRoot, "root directory is damaged", "e2fsck"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st, out := runMount(t, c.args...)
			if st != c.status {
				t.Errorf("exit status %d, want %d; output:\n%s", st, c.status, out)
			}
			for _, s := range c.says {
				if !strings.Contains(strings.ToLower(out), strings.ToLower(s)) {
					t.Errorf("output lacks %q:\n%s", s, out)
				}
			}
			if testmount.IsMountPoint(dir) {
				unix.Unmount(dir, unix.MNT_DETACH)
				t.Errorf("something was left mounted on %s", dir)
			}
		})
	}
}

// mountThroughService mounts a small image through a service listening
// on sock, walks it, unmounts, and checks that the per-mount daemon ended
// (the daemon holding the image: other tests may run daemons of their
// own meanwhile, and the service itself stays).
func mountThroughService(t *testing.T, sock string) {
	t.Helper()
	img := testimg.Build(t, testimg.Spec{Name: "service", MkfsArgs: []string{"-t", "ext4"}, SizeMB: 16, Tree: testimg.TreeSmall})
	dir := t.TempDir()
	st, out := runMountEnv(t, []string{"SAFEFS_SOCKET=" + sock}, img, dir, "-v")
	if st != 0 {
		t.Fatalf("mount.safe exited %d:\n%s", st, out)
	}
	if !strings.Contains(out, "connected to "+sock) {
		t.Errorf("mount.safe did not use the service:\n%s", out)
	}
	// mount.safe tries to grant FUSE iomap and says how that went (this
	// kernel may or may not have it).
	if !strings.Contains(out, "FUSE iomap") {
		t.Errorf("mount.safe -v says nothing about FUSE iomap:\n%s", out)
	}
	testimg.Compare(t, testimg.KernelWalk(t, img), testimg.Walk(t, dir), testimg.CompareOpts{})
	if err := unix.Unmount(dir, 0); err != nil {
		t.Fatalf("umount: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(testmount.DaemonsHolding(img)) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if pids := testmount.DaemonsHolding(img); len(pids) > 0 {
		t.Errorf("safefsd processes %v still hold %s 10 s after the unmount", pids, img)
	}
}

// TestListenMount mounts through safefsd --listen: one child per mount.
func TestListenMount(t *testing.T) {
	requireMount(t)
	sock := filepath.Join(t.TempDir(), "safefsd.sock")
	srv := exec.Command(filepath.Join(testmount.Binaries(t), "safefsd"), "--listen", sock)
	var logs bytes.Buffer
	srv.Stderr = &logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Process.Kill()
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st, err := os.Stat(sock); err != nil || st.Mode().Perm()&0o077 != 0 {
		t.Fatalf("socket %s: %v, mode %v: want a root-only socket", sock, err, st.Mode())
	}
	mountThroughService(t, sock)
	srv.Process.Signal(unix.SIGTERM)
	if err := srv.Wait(); err != nil {
		t.Errorf("listener exited with %v:\n%s", err, logs.String())
	}
	if _, err := os.Stat(sock); err == nil {
		t.Errorf("socket %s left behind", sock)
	}
}

// TestSocketActivatedMount mounts through systemd-socket-activate, which
// emulates safefsd.socket with Accept=yes.
func TestSocketActivatedMount(t *testing.T) {
	requireMount(t)
	sa, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("systemd-socket-activate not installed")
	}
	sock := filepath.Join(t.TempDir(), "safefsd.sock")
	srv := exec.Command(sa, "--seqpacket", "-a", "-l", sock, filepath.Join(testmount.Binaries(t), "safefsd"))
	var logs bytes.Buffer
	srv.Stderr = &logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	mountThroughService(t, sock)
}

// TestDaemonGoneDuringHandshake plays a daemon that dies at each step of
// the handshake: mount.safe must report it, exit 32, and leave nothing
// mounted.
func TestDaemonGoneDuringHandshake(t *testing.T) {
	requireMount(t)
	img := testimg.Build(t, testimg.Spec{Name: "fail", MkfsArgs: []string{"-t", "ext4"}, SizeMB: 16, Tree: testimg.TreeSmall})
	// The daemon's side of the handshake, step by step; each stage plays
	// the steps up to its own and then dies.
	closeAll := func(files []*os.File) {
		for _, f := range files {
			f.Close()
		}
	}
	steps := []func(c *fdpass.Conn) error{
		func(c *fdpass.Conn) error {
			_, _, err := c.Expect(fdpass.THello)
			return err
		},
		func(c *fdpass.Conn) error {
			if err := c.Send(&fdpass.FileRequest{ID: 1, Role: fdpass.RoleSource}); err != nil {
				return err
			}
			_, files, err := c.Expect(fdpass.TFileReply)
			closeAll(files)
			if err != nil {
				return err
			}
			// An O_DIRECT descriptor is for block devices only: for
			// an image, a refusal, and the handshake goes on.
			if err := c.Send(&fdpass.FileRequest{ID: 2, Role: fdpass.RoleSource, Direct: true}); err != nil {
				return err
			}
			m, files, err := c.Expect(fdpass.TFileReply)
			closeAll(files)
			if err == nil && (m.(*fdpass.FileReply).Error == "" || len(files) != 0) {
				err = fmt.Errorf("O_DIRECT request for an image: %+v with %d descriptors, want a refusal", m, len(files))
			}
			return err
		},
		func(c *fdpass.Conn) error {
			if err := c.Send(&fdpass.MountParams{Subtype: "ext4", ReadOnly: true, MaxRead: 1 << 20, BlockSize: 4096}); err != nil {
				return err
			}
			_, files, err := c.Expect(fdpass.TFuseDevice)
			closeAll(files)
			return err
		},
	}
	type stage struct {
		name string
		play func(c *fdpass.Conn) error
	}
	var stages []stage
	for i, name := range []string{"after hello", "after the source", "before answering INIT"} {
		stages = append(stages, stage{name, func(c *fdpass.Conn) error {
			for _, step := range steps[:i+1] {
				if err := step(c); err != nil {
					return err
				}
			}
			return nil
		}})
	}
	for _, s := range stages {
		t.Run(s.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "fake.sock")
			l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			played := make(chan error, 1)
			go func() {
				uc, err := l.AcceptUnix()
				if err != nil {
					played <- err
					return
				}
				c := fdpass.NewConn(uc)
				err = s.play(c)
				c.Close() // the daemon dies here
				played <- err
			}()
			dir := t.TempDir()
			st, out := runMountEnv(t, []string{"SAFEFS_SOCKET=" + sock}, img, dir, "-o", "ro")
			if err := <-played; err != nil {
				t.Fatalf("fake daemon: %v", err)
			}
			if st != exitFailure || !strings.Contains(out, img) || !strings.Contains(out, "daemon stopped before the mount was ready") {
				t.Errorf("exit %d, want %d and a message naming %s and the daemon's end:\n%s", st, exitFailure, img, out)
			}
			if testmount.IsMountPoint(dir) {
				unix.Unmount(dir, unix.MNT_DETACH)
				t.Errorf("something was left mounted on %s", dir)
			}
		})
	}
}

// TestDirtyJournalMount mounts a filesystem left with committed
// transactions in its journal (EXT4_IOC_SHUTDOWN): safefsd replays the
// journal in memory, so the mount shows what the kernel shows after its
// own recovery of a copy, and the image is not written (same SHA-256
// before and after). With -o norecovery the mount shows the unreplayed
// state and says so.
func TestDirtyJournalMount(t *testing.T) {
	requireMount(t)
	for _, c := range []struct {
		name string
		mkfs []string
	}{
		{"ext4-4k-csum-v3", []string{"-t", "ext4", "-O", "64bit,metadata_csum"}},
		{"ext4-1k", []string{"-t", "ext4", "-b", "1024"}},
		{"ext3-1k", []string{"-t", "ext3", "-b", "1024"}},
	} {
		t.Run(c.name, func(t *testing.T) { dirtyJournalMount(t, c.mkfs) })
	}
}

// dirtyJournalWork makes several transactions of every kind of change,
// each committed by an fsync, the last one left in the log by the
// shutdown.
func dirtyJournalWork(mnt string) error {
	p := func(name string) string { return filepath.Join(mnt, name) }
	for i := 0; i < 50; i++ {
		if err := os.WriteFile(p(fmt.Sprintf("file%02d", i)), bytes.Repeat([]byte{byte(i)}, 1000*i+1), 0o644); err != nil {
			return err
		}
	}
	steps := []func() error{
		func() error { return os.Mkdir(p("dir"), 0o755) },
		func() error { return os.Rename(p("file01"), p("dir/renamed")) },
		func() error { return os.Remove(p("file02")) },
		func() error { return os.Symlink("dir/renamed", p("link")) },
		func() error { return os.Truncate(p("file40"), 1234) },
		func() error { return unix.Setxattr(p("file03"), "user.note", []byte("journaled"), 0) },
		func() error { return os.RemoveAll(p("dir")) },
		func() error { return os.Mkdir(p("dir"), 0o700) },
		func() error { return os.WriteFile(p("dir/renamed"), []byte("again"), 0o600) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
		// fsync commits the running transaction: one per step.
		f, err := os.Open(mnt)
		if err != nil {
			return err
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func dirtyJournalMount(t *testing.T, mkfs []string) {
	img := testimg.MakeDirty(t, t.TempDir(), "dirty", testimg.DirtySpec{Mkfs: mkfs, SizeMB: 64, Work: dirtyJournalWork})
	sum := func() string {
		data, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%x", sha256.Sum256(data))
	}
	before := sum()
	// The oracle: the kernel's recovery of a copy.
	replayed := filepath.Join(t.TempDir(), "replayed.img")
	if err := testimg.CopyFile(img, replayed); err != nil {
		t.Fatal(err)
	}
	if err := testimg.KernelReplay(t, replayed); err != nil {
		t.Fatalf("the kernel could not recover a copy: %v", err)
	}
	want := testimg.KernelWalk(t, replayed)
	if _, ok := want["dir/renamed"]; !ok {
		t.Fatalf("the kernel's recovery lacks dir/renamed: the image was not dirty as intended")
	}

	dir := t.TempDir()
	if st, out := runMount(t, img, dir, "-o", "ro"); st != 0 {
		t.Fatalf("mount.safe exited %d:\n%s", st, out)
	}
	got := testimg.Walk(t, dir)
	if err := unix.Unmount(dir, 0); err != nil {
		t.Fatal(err)
	}
	testimg.Compare(t, want, got, testimg.CompareOpts{})

	st, out := runMount(t, img, dir, "-o", "ro,norecovery")
	if st != 0 {
		t.Fatalf("mount.safe -o norecovery exited %d:\n%s", st, out)
	}
	if !strings.Contains(out, "not replayed") {
		t.Errorf("-o norecovery: no warning that the journal was not replayed:\n%s", out)
	}
	_, err := os.Lstat(filepath.Join(dir, "dir", "renamed"))
	unix.Unmount(dir, 0)
	if err == nil {
		t.Errorf("-o norecovery shows dir/renamed, which only the journal has")
	}
	if after := sum(); after != before {
		t.Errorf("the image changed: sha256 %s before, %s after", before, after)
	}
}

// TestImageLock checks that an image file cannot be mounted twice at once,
// and that it can be mounted again right after an unmount, while the
// first mount's daemon may still be on its way out holding the image's
// lock.
func TestImageLock(t *testing.T) {
	requireMount(t)
	img := testimg.Build(t, testimg.Spec{Name: "fail", MkfsArgs: []string{"-t", "ext4"}, SizeMB: 16, Tree: testimg.TreeSmall})
	first, second := t.TempDir(), t.TempDir()
	for i := 0; i < 3; i++ {
		if st, out := runMount(t, img, first, "-o", "ro"); st != 0 {
			t.Fatalf("round %d: mount.safe exited %d:\n%s", i, st, out)
		}
		if i == 0 {
			st, out := runMount(t, img, second, "-o", "ro")
			if st != exitFailure || !strings.Contains(out, "in use by another mount") {
				t.Errorf("a second mount of %s: exit %d, want %d and \"in use by another mount\":\n%s", img, st, exitFailure, out)
			}
			if testmount.IsMountPoint(second) {
				unix.Unmount(second, unix.MNT_DETACH)
				t.Errorf("the second mount of %s was made", img)
			}
		}
		if err := unix.Unmount(first, 0); err != nil {
			t.Fatalf("round %d: umount: %v", i, err)
		}
	}
}
