package fusefs_test

import (
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"safefs/internal/fusefs"
	"safefs/internal/testimg"
)

// TestReadOnly tries every kind of change on a mount and expects EROFS:
// on a read-only mount, where the kernel refuses most changes itself, and
// on a mount without the read-only flags, where each request reaches the
// server and the server must refuse it. The image must not change.
func TestReadOnly(t *testing.T) {
	img := testimg.Build(t, testimg.SpecNamed(t, "ext4-default"))
	before := fileHash(t, img)
	changes := []struct {
		name string
		do   func(d string) error
	}{
		{"create", func(d string) error {
			f, err := os.OpenFile(filepath.Join(d, "new"), os.O_CREATE|os.O_WRONLY, 0o644)
			if err == nil {
				f.Close()
			}
			return err
		}},
		// The server needs no OPEN (it answers ENOSYS once, and the
		// kernel opens by itself from then on), so without the
		// read-only flag an open for writing succeeds and the write
		// is what fails.
		{"write", func(d string) error {
			f, err := os.OpenFile(filepath.Join(d, "files/size-100"), os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.Write([]byte("x"))
			return err
		}},
		{"open O_TRUNC", func(d string) error {
			fd, err := unix.Open(filepath.Join(d, "files/size-100"), unix.O_RDONLY|unix.O_TRUNC, 0)
			if err == nil {
				unix.Close(fd)
			}
			return err
		}},
		{"mkdir", func(d string) error { return os.Mkdir(filepath.Join(d, "newdir"), 0o755) }},
		{"unlink", func(d string) error { return unix.Unlink(filepath.Join(d, "files/size-1")) }},
		{"rmdir", func(d string) error { return unix.Rmdir(filepath.Join(d, "dirs/empty")) }},
		{"rename", func(d string) error {
			return unix.Rename(filepath.Join(d, "files/size-1"), filepath.Join(d, "files/renamed"))
		}},
		{"link", func(d string) error { return unix.Link(filepath.Join(d, "files/size-1"), filepath.Join(d, "linked")) }},
		{"symlink", func(d string) error { return unix.Symlink("target", filepath.Join(d, "newlink")) }},
		{"mknod", func(d string) error { return unix.Mknod(filepath.Join(d, "fifo"), unix.S_IFIFO|0o644, 0) }},
		{"truncate", func(d string) error { return unix.Truncate(filepath.Join(d, "files/size-100"), 1) }},
		{"chmod", func(d string) error { return unix.Chmod(filepath.Join(d, "files/size-100"), 0o600) }},
		{"chown", func(d string) error { return unix.Lchown(filepath.Join(d, "files/size-100"), 1, 1) }},
		{"utimes", func(d string) error {
			return unix.UtimesNano(filepath.Join(d, "files/size-100"), []unix.Timespec{{Sec: 1}, {Sec: 2}})
		}},
		{"setxattr", func(d string) error {
			return unix.Setxattr(filepath.Join(d, "xattrs/basic"), "user.new", []byte("x"), 0)
		}},
		{"removexattr", func(d string) error { return unix.Removexattr(filepath.Join(d, "xattrs/basic"), "user.small") }},
		{"setfacl", func(d string) error {
			return unix.Setxattr(filepath.Join(d, "xattrs/acl-file"), "system.posix_acl_access", testimg.FileACL(), 0)
		}},
		{"chattr", func(d string) error {
			fd, err := unix.Open(filepath.Join(d, "files/size-100"), unix.O_RDONLY, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			return unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, 0x10)
		}},
	}
	for _, mode := range []struct {
		name string
		rw   bool
	}{{"ro-mount", false}, {"rw-mount", true}} {
		t.Run(mode.name, func(t *testing.T) {
			m := mountImage(t, img, mountConfig{readWrite: mode.rw})
			for _, c := range changes {
				if err := c.do(m.Dir); errnoOf(err) != syscall.EROFS {
					t.Errorf("%s: got %v, want EROFS", c.name, err)
				}
			}
			// Reading still works after all that.
			if b, err := os.ReadFile(filepath.Join(m.Dir, "files/size-100")); err != nil || len(b) != 100 {
				t.Errorf("read after the changes: %d bytes, %v", len(b), err)
			}
			m.Unmount(t)
		})
	}
	if after := fileHash(t, img); after != before {
		t.Errorf("the image changed")
	}
}

// TestMutatingOpsRefused calls each request that changes something on the
// server directly, so that a new go-fuse default (or a forgotten override)
// cannot slip through where the kernel would not have stopped it first.
func TestMutatingOpsRefused(t *testing.T) {
	fsys := openExt4(t, testimg.Build(t, testimg.SpecNamed(t, "ext4-default")))
	fs := fusefs.New(fsys, fusefs.Options{Logf: t.Logf})
	root := fuse.InHeader{NodeId: fuse.FUSE_ROOT_ID}
	c := make(chan struct{})
	for name, st := range map[string]fuse.Status{
		"SetAttr":      fs.SetAttr(c, &fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{InHeader: root}}, &fuse.AttrOut{}),
		"Mknod":        fs.Mknod(c, &fuse.MknodIn{InHeader: root}, "x", &fuse.EntryOut{}),
		"Mkdir":        fs.Mkdir(c, &fuse.MkdirIn{InHeader: root}, "x", &fuse.EntryOut{}),
		"Unlink":       fs.Unlink(c, &root, "files"),
		"Rmdir":        fs.Rmdir(c, &root, "dirs"),
		"Rename":       fs.Rename(c, &fuse.RenameIn{InHeader: root}, "files", "x"),
		"Link":         fs.Link(c, &fuse.LinkIn{InHeader: root}, "x", &fuse.EntryOut{}),
		"Symlink":      fs.Symlink(c, &root, "t", "x", &fuse.EntryOut{}),
		"SetXAttr":     fs.SetXAttr(c, &fuse.SetXAttrIn{InHeader: root}, "user.x", nil),
		"RemoveXAttr":  fs.RemoveXAttr(c, &root, "user.root"),
		"Create":       fs.Create(c, &fuse.CreateIn{InHeader: root}, "x", &fuse.CreateOut{}),
		"Tmpfile":      fs.Tmpfile(c, &fuse.CreateIn{InHeader: root}, &fuse.CreateOut{}),
		"Fallocate":    fs.Fallocate(c, &fuse.FallocateIn{InHeader: root}),
		"Access(W_OK)": fs.Access(c, &fuse.AccessIn{InHeader: root, Mask: unix.W_OK}),
		"Ioctl(SETFLAGS)": fs.Ioctl(c, &fuse.IoctlIn{InHeader: root, Cmd: unix.FS_IOC_SETFLAGS},
			nil, &fuse.IoctlOut{}, nil),
	} {
		if st != fuse.EROFS {
			t.Errorf("%s: got %v, want EROFS", name, st)
		}
	}
	for name, st := range map[string]fuse.Status{
		"Write":         second(fs.Write(c, &fuse.WriteIn{InHeader: root}, []byte("x"))),
		"Writev":        second(fs.Writev(c, &fuse.WriteIn{InHeader: root}, [][]byte{[]byte("x")})),
		"CopyFileRange": second(fs.CopyFileRange(c, &fuse.CopyFileRangeIn{InHeader: root})),
	} {
		if st != fuse.EROFS {
			t.Errorf("%s: got %v, want EROFS", name, st)
		}
	}
}

// Open needs no server: ENOSYS, for reading as for writing (the
// kernel then opens files itself, and a write fails at WRITE).
func TestOpenNotNeeded(t *testing.T) {
	fsys := openExt4(t, testimg.Build(t, testimg.SpecNamed(t, "ext4-default")))
	fs := fusefs.New(fsys, fusefs.Options{Logf: t.Logf})
	root := fuse.InHeader{NodeId: fuse.FUSE_ROOT_ID}
	c := make(chan struct{})
	for _, flags := range []uint32{syscall.O_RDONLY, syscall.O_RDWR, syscall.O_WRONLY | syscall.O_TRUNC} {
		if st := fs.Open(c, &fuse.OpenIn{InHeader: root, Flags: flags}, &fuse.OpenOut{}); st != fuse.ENOSYS {
			t.Errorf("Open(%#o): got %v, want ENOSYS", flags, st)
		}
	}
	if st := fs.OpenDir(c, &fuse.OpenIn{InHeader: root}, &fuse.OpenOut{}); st != fuse.ENOSYS {
		t.Errorf("OpenDir: got %v, want ENOSYS", st)
	}
}

func second[T any](_ T, st fuse.Status) fuse.Status { return st }

func fileHash(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}
