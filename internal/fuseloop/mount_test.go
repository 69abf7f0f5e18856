package fuseloop_test

import (
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"safefs/internal/ext4"
	"safefs/internal/fusefs"
	"safefs/internal/fusemount"
	"safefs/internal/testimg"

	"safefs/internal/fuseloop"
)

// requireFUSE skips the test unless it can create FUSE mounts.
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

// server says what serves a test mount.
type server int

const (
	goFuseServer server = iota // go-fuse's fuse.Server
	loopServer                 // a Loop, as fusefs.NewServer makes it
)

func (s server) String() string {
	if s == loopServer {
		return "loop"
	}
	return "gofuse"
}

// mount is an image mounted through FUSE, served by fusefs in this
// process.
type mount struct {
	Dir  string
	Loop *fuseloop.Loop // for loopServer
	srv  server
	logs logSink
	done chan error // Serve's result
}

// mountImage mounts img the way mount.safe does (create the superblock,
// answer INIT, attach) and serves it with srv. The mount is unmounted when
// the test ends, if it is not before.
func mountImage(t testing.TB, img string, srv server) *mount {
	t.Helper()
	requireFUSE(t)
	m := &mount{Dir: t.TempDir(), srv: srv, done: make(chan error, 1)}
	fuseFD, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open /dev/fuse: %v", err)
	}
	fsfd, err := fusemount.Create(fusemount.Config{
		FuseFD: fuseFD, Source: img, Subtype: "ext4",
		MaxRead: fusefs.MaxRequest, ReadOnly: true,
	})
	if err != nil {
		unix.Close(fuseFD)
		t.Fatal(err)
	}
	defer unix.Close(fsfd)

	f, err := os.Open(img)
	if err != nil {
		unix.Close(fuseFD)
		t.Fatal(err)
	}
	fsys, err := ext4.Open(fusefs.LimitDevice(f, 0), nil)
	if err != nil {
		unix.Close(fuseFD)
		f.Close()
		t.Fatal(err)
	}
	opts := fusefs.Options{Logf: m.logs.logf}
	var serveFn func() error
	switch srv {
	case goFuseServer:
		fs := fusefs.New(fsys, opts)
		s, err := fuse.NewServer(fs, "/dev/fd/"+strconv.Itoa(fuseFD), fs.MountOptions())
		if err != nil {
			f.Close()
			t.Fatal(err)
		}
		serveFn = func() error { s.Serve(); return nil }
	case loopServer:
		// fusefs's own server: a Loop with the iomap extensions
		// (declined here: no device cookie, no iomap kernel).
		l, err := fusefs.NewServer(fuseFD, fsys, opts)
		if err != nil {
			f.Close()
			t.Fatal(err)
		}
		m.Loop = l
		serveFn = l.Serve
	}
	go func() {
		defer f.Close()
		m.done <- serveFn()
	}()
	// On failure the deferred close of the detached superblock ends the
	// connection, and so the server.
	if err := fusemount.Attach(fsfd, m.Dir, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_RDONLY); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Unmount(t) })
	if err := fusemount.RaiseReadAhead(m.Dir, fusefs.MaxRequest>>10); err != nil {
		t.Logf("raising read-ahead: %v", err)
	}
	m.pollHack(t)
	return m
}

// pollHack makes the kernel ask FUSE_POLL once, which go-fuse answers
// ENOSYS so that it is never asked again: os.Open registers files with
// the runtime's epoll, which sends FUSE_POLL without giving up its P, and
// a server in the same process could starve (see fusefs's mount tests).
// go-fuse answers for this name itself, in ProtocolServer too.
func (m *mount) pollHack(t testing.TB) {
	t.Helper()
	fd, err := syscall.Open(filepath.Join(m.Dir, ".go-fuse-epoll-hack"), syscall.O_RDONLY, 0)
	if err != nil {
		t.Fatalf("poll hack: %v", err)
	}
	unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
	syscall.Close(fd)
}

// Unmount unmounts and returns Serve's result; a server that does not
// return fails the test.
func (m *mount) Unmount(t testing.TB) error {
	t.Helper()
	if m.Dir == "" {
		return nil
	}
	dir := m.Dir
	m.Dir = ""
	var err error
	for range 100 {
		if err = unix.Unmount(dir, 0); err != unix.EBUSY {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Errorf("unmount %s: %v; detaching", dir, err)
		unix.Unmount(dir, unix.MNT_DETACH)
	}
	select {
	case err := <-m.done:
		return err
	case <-time.After(10 * time.Second):
		buf := make([]byte, 1<<20)
		t.Fatalf("the %v server has not returned 10s after unmount:\n%s", m.srv, buf[:runtime.Stack(buf, true)])
		return nil
	}
}

// TestKernelOracle mounts images of the format matrix through fusefs
// served by a Loop and compares a full walk (names, types, modes, owners,
// sizes, link counts, inode numbers, times, symlinks, xattrs, contents,
// SEEK_DATA/SEEK_HOLE) and statfs with the kernel's own ext4 mount of the
// same image; then unmounts and checks that Serve returns nil and leaves
// no goroutine behind.
func TestKernelOracle(t *testing.T) {
	requireFUSE(t)
	testimg.RequireKernelMount(t)
	for _, name := range []string{"ext4-default", "ext4-inline", "ext3-1k"} {
		t.Run(name, func(t *testing.T) {
			img := testimg.Build(t, testimg.SpecNamed(t, name))
			want := testimg.KernelWalk(t, img)
			kst := testimg.KernelStatfs(t, img)

			baseline := runtime.NumGoroutine()
			m := mountImage(t, img, loopServer)
			got := testimg.Walk(t, m.Dir)
			var fst unix.Statfs_t
			if err := unix.Statfs(m.Dir, &fst); err != nil {
				t.Fatal(err)
			}
			if err := m.Unmount(t); err != nil {
				t.Errorf("Serve: %v", err)
			}
			if n := fuseloop.Readers(m.Loop); n != 0 {
				t.Errorf("%d readers left after Serve", n)
			}
			goroutinesSettle(t, baseline)

			testimg.Compare(t, want, got, testimg.CompareOpts{})
			if kst.Blocks != fst.Blocks || kst.Bfree != fst.Bfree || kst.Files != fst.Files ||
				kst.Ffree != fst.Ffree || kst.Bsize != fst.Bsize {
				t.Errorf("statfs: kernel %+v, FUSE %+v", kst, fst)
			}
			if lines := m.logs.Lines(); len(lines) > 0 {
				t.Errorf("the server logged on an undamaged image: %q", lines)
			}
		})
	}
}

// TestMountLargeRead reads a file much larger than a READ through a
// mount served by a Loop, with 1 MiB buffered and O_DIRECT reads, and
// checks every byte: the READ path that skips go-fuse's copy.
func TestMountLargeRead(t *testing.T) {
	requireFUSE(t)
	img := smallImage(t)
	m := mountImage(t, img.path, loopServer)
	want := img.files["big"]
	got, err := os.ReadFile(filepath.Join(m.Dir, "big"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("buffered read of big: %d bytes, differs from the file's %d", len(got), len(want))
	}
	fd, err := unix.Open(filepath.Join(m.Dir, "big"), unix.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := alignedBuffer(1 << 20)
	for off := 0; off < len(want); off += len(buf) {
		n, err := unix.Pread(fd, buf, int64(off))
		if err != nil {
			unix.Close(fd)
			t.Fatalf("O_DIRECT read at %d: %v", off, err)
		}
		if string(buf[:n]) != string(want[off:min(off+len(buf), len(want))]) {
			unix.Close(fd)
			t.Fatalf("O_DIRECT read at %d: data differs", off)
		}
	}
	unix.Close(fd)
	if err := m.Unmount(t); err != nil {
		t.Errorf("Serve: %v", err)
	}
}
