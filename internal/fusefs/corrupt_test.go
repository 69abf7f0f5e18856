package fusefs_test

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"safefs/internal/ext4"
	"safefs/internal/testimg"
)

// TestCorruptImage damages two objects of an image: the extent tree of
// one file (its data cannot be found) and the checksum of another inode
// (it cannot be trusted at all). Each must fail on its own with the errno
// the kernel's ext4 uses (EUCLEAN for corruption, EBADMSG for a checksum
// mismatch; EIO is accepted too), the rest of the tree must read as
// before, and each damaged inode must be named by exactly one log line,
// however often it is asked for.
func TestCorruptImage(t *testing.T) {
	requireFUSE(t)
	src := testimg.Build(t, testimg.SpecNamed(t, "ext4-default"))
	img := filepath.Join(t.TempDir(), "corrupt.img")
	copyFile(t, src, img)
	const badExtents, badInode = "files/size-102400", "files/size-4096"
	inoOf := func(path string) string {
		out, err := exec.Command("debugfs", "-R", "stat /"+path, img).CombinedOutput()
		i := strings.Index(string(out), "Inode: ")
		if err != nil || i < 0 {
			t.Fatalf("debugfs stat %s: %v: %s", path, err, out)
		}
		return strings.Fields(string(out[i:]))[1]
	}
	extentsIno, inodeIno := inoOf(badExtents), inoOf(badInode)
	for _, cmd := range []string{
		"sif /" + badExtents + " block[0] 0", // the extent header's magic
		"sif /" + badInode + " checksum 0x1234",
	} {
		if out, err := exec.Command("debugfs", "-w", "-R", cmd, img).CombinedOutput(); err != nil {
			t.Fatalf("debugfs %s: %v: %s", cmd, err, out)
		}
	}

	m := mountImage(t, img, mountConfig{})
	bad := map[string]bool{badExtents: true, badInode: true}
	// Walk twice: the second pass must not log again.
	for pass := 0; pass < 2; pass++ {
		failed := map[string]syscall.Errno{}
		err := filepath.WalkDir(m.Dir, func(p string, d fs.DirEntry, err error) error {
			rel, _ := filepath.Rel(m.Dir, p)
			if err != nil {
				failed[rel] = errnoOf(err)
				return nil
			}
			info, err := os.Lstat(p)
			if err != nil {
				failed[rel] = errnoOf(err)
				return nil
			}
			if info.Mode().IsRegular() {
				if err := readAll(p); err != nil {
					failed[rel] = errnoOf(err)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for p, e := range failed {
			if !bad[p] {
				t.Errorf("pass %d: %s: %v, on an undamaged object", pass, p, e)
			} else if e != syscall.EUCLEAN && e != syscall.EBADMSG && e != syscall.EIO {
				t.Errorf("pass %d: %s: got %v, want EUCLEAN, EBADMSG or EIO", pass, p, e)
			}
		}
		for p := range bad {
			if _, ok := failed[p]; !ok {
				t.Errorf("pass %d: %s read without error", pass, p)
			}
		}
		if e := failed[badExtents]; e != syscall.EUCLEAN {
			t.Logf("%s: %v (the kernel's ext4 says EUCLEAN)", badExtents, e)
		}
		if e := failed[badInode]; e != syscall.EBADMSG {
			t.Logf("%s: %v (the kernel's ext4 says EBADMSG)", badInode, e)
		}
	}
	// More ways to ask about the broken file: SEEK_DATA needs its extents.
	if fd, err := unix.Open(filepath.Join(m.Dir, badExtents), unix.O_RDONLY, 0); err == nil {
		if _, err := unix.Seek(fd, 0, unix.SEEK_DATA); err == nil {
			t.Errorf("SEEK_DATA on %s succeeded", badExtents)
		}
		unix.Close(fd)
	}
	m.Unmount(t)

	lines := m.logs.Lines()
	for _, ino := range []string{extentsIno, inodeIno} {
		n := 0
		for _, l := range lines {
			if strings.Contains(l, "inode "+ino+":") || strings.Contains(l, "inode "+ino+" ") {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d log lines name inode %s, want 1", n, ino)
		}
	}
	if len(lines) != 2 {
		t.Errorf("want 2 log lines, got %d:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	for _, l := range lines {
		t.Logf("log: %s", l)
	}
}

func readAll(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(io.Discard, f)
	return err
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestBadName puts a '/' into a directory entry's name (on ext2, whose
// directory blocks carry no checksum). The kernel's FUSE would fail the
// whole listing with EIO for such a name, so the server leaves that entry
// out, lists the rest, and says so in one log line.
func TestBadName(t *testing.T) {
	requireFUSE(t)
	src := testimg.Build(t, testimg.SpecNamed(t, "ext2"))
	img := filepath.Join(t.TempDir(), "badname.img")
	copyFile(t, src, img)
	out, err := exec.Command("debugfs", "-R", "blocks /names", img).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs blocks: %v: %s", err, out)
	}
	raw, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	bs := int64(blockSize(t, img))
	patched := false
	for _, f := range strings.Fields(string(out)) {
		var blk int64
		if _, err := fmt.Sscan(f, &blk); err != nil {
			continue
		}
		b := raw[blk*bs : (blk+1)*bs]
		if i := bytes.Index(b, []byte("a.b.c")); i >= 0 {
			b[i+1] = '/'
			patched = true
		}
	}
	if !patched {
		t.Fatalf("no entry a.b.c in the blocks of /names (%s)", out)
	}
	if err := os.WriteFile(img, raw, 0o644); err != nil {
		t.Fatal(err)
	}

	m := mountImage(t, img, mountConfig{})
	for pass := 0; pass < 2; pass++ {
		names, err := os.ReadDir(filepath.Join(m.Dir, "names"))
		if err != nil {
			t.Fatalf("readdir: %v", err)
		}
		var got []string
		for _, n := range names {
			got = append(got, n.Name())
			if strings.Contains(n.Name(), "b.c") {
				t.Errorf("listed %q", n.Name())
			}
		}
		if len(got) != 9 {
			t.Errorf("listed %d names, want the 9 good ones: %q", len(got), got)
		}
	}
	m.Unmount(t)
	lines := m.logs.Lines()
	if len(lines) != 1 || !strings.Contains(lines[0], `"a/b.c"`) {
		t.Errorf("want one log line naming \"a/b.c\", got %q", lines)
	}
}

func blockSize(t *testing.T, img string) uint32 {
	t.Helper()
	return openExt4(t, img).BlockSize()
}

// openExt4 opens an image with internal/ext4 for the rest of the test.
func openExt4(t *testing.T, img string) *ext4.FS {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fsys, err := ext4.Open(f, nil)
	if err != nil {
		t.Fatal(err)
	}
	return fsys
}
