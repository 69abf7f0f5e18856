package fusefs_test

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/hanwen/go-fuse/v2/posixtest"
	"golang.org/x/sys/unix"

	"safefs/internal/testimg"
)

// TestPosix runs the go-fuse posixtest cases that apply to a read-only
// filesystem. Only ReadDirConsistency runs unchanged: every other case
// starts by creating the files it needs. Those whose subject is reading
// (DirSeek, the lseek cases, FdLeak, ParallelFileOpen, SymlinkReadlink,
// OpenAt, XAttr, XAttrLarge) are ported here to run on files the image
// already has, keeping their checks. The rest (AppendWrite, Fallocate,
// file locks, Link, Mkdir/Rmdir, renames, truncation, SetattrSymlink,
// NlinkZero, FstatDeleted, OpenSymlinkRace, DirectIO, FileBasic,
// FileLarge, ReadDirBasic) test changes, which TestReadOnly covers by
// expecting EROFS.
func TestPosix(t *testing.T) {
	img := testimg.Build(t, testimg.SpecNamed(t, "ext4-default"))
	m := mountImage(t, img, mountConfig{})
	mnt := m.Dir

	t.Run("ReadDirConsistency", func(t *testing.T) {
		posixtest.ReadDirConsistency(t, mnt)
		// dirs/many spans blocks and has a hash index.
		posixtest.ReadDirConsistency(t, filepath.Join(mnt, "dirs/many"))
	})

	// DirSeek is xfstests generic/257: seeking a directory to each offset
	// getdents reported must resume at the next entry. Here the offsets
	// are ext4 cursors in a hash-indexed directory.
	t.Run("DirSeek", func(t *testing.T) {
		fd, err := syscall.Open(filepath.Join(mnt, "dirs/many"), syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer syscall.Close(fd)
		all := readAllDirEntries(t, fd)
		if len(all) < 500 {
			t.Fatalf("got %d entries, want over 500", len(all))
		}
		buf := make([]byte, 4096)
		for i := len(all) - 1; i >= 0; i-- {
			var seekTo int64
			if i > 0 {
				seekTo = int64(all[i-1].Off)
			}
			if _, err := unix.Seek(fd, seekTo, 0); err != nil {
				t.Fatal(err)
			}
			n, err := unix.ReadDirent(fd, buf)
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				t.Errorf("getdents returned 0 on entry %d", i)
				continue
			}
			var de fuse.DirEntry
			de.Parse(buf)
			if !reflect.DeepEqual(de, all[i]) {
				t.Errorf("entry %d: got %v, want %v", i, de, all[i])
			}
		}
	})

	file := filepath.Join(mnt, "files/size-4097")
	const fileSize = 4097

	t.Run("LseekHoleSeeksToEOF", func(t *testing.T) {
		fd, err := syscall.Open(file, syscall.O_RDONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer syscall.Close(fd)
		if off, err := unix.Seek(fd, fileSize/2, unix.SEEK_HOLE); err != nil {
			t.Fatalf("Seek: %v", err)
		} else if off != fileSize {
			t.Errorf("got offset %d, want %d", off, fileSize)
		}
	})

	t.Run("LseekEnxioCheck", func(t *testing.T) {
		fd, err := syscall.Open(file, syscall.O_RDONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer syscall.Close(fd)
		for _, c := range []struct {
			name   string
			offset int64
			whence int
		}{
			{"SEEK_DATA at EOF", fileSize, unix.SEEK_DATA},
			{"SEEK_DATA past EOF", fileSize + 1, unix.SEEK_DATA},
			{"SEEK_HOLE past EOF", fileSize + 1, unix.SEEK_HOLE},
		} {
			if _, err := unix.Seek(fd, c.offset, c.whence); err != syscall.ENXIO {
				t.Errorf("%s: got %v, want ENXIO", c.name, err)
			}
		}
	})

	t.Run("FdLeak", func(t *testing.T) {
		before := openFds(t)
		for i := 0; i < 100; i++ {
			if _, err := os.ReadFile(file); err != nil {
				t.Fatalf("ReadFile: %v", err)
			}
		}
		if after := openFds(t); after > before+15 {
			t.Errorf("%d open file descriptors after 100 ReadFile, %d before", after, before)
		}
	})

	t.Run("ParallelFileOpen", func(t *testing.T) {
		want, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for i := 0; i < 10; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got, err := os.ReadFile(file)
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("ReadFile: %v (%d bytes, want %d)", err, len(got), len(want))
				}
			}()
		}
		wg.Wait()
	})

	t.Run("SymlinkReadlink", func(t *testing.T) {
		got, err := os.Readlink(filepath.Join(mnt, "symlinks/to-file"))
		if err != nil {
			t.Fatalf("Readlink: %v", err)
		}
		if want := "../files/size-100"; got != want {
			t.Errorf("got %q want %q", got, want)
		}
	})

	t.Run("OpenAt", func(t *testing.T) {
		dirfd, err := syscall.Open(filepath.Join(mnt, "dirs/deep/level1"), syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer syscall.Close(dirfd)
		fd, err := unix.Openat(dirfd, "level2/level3/level4/level5/level6/level7/level8/bottom", syscall.O_RDONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer syscall.Close(fd)
		buf := make([]byte, 100)
		n, err := syscall.Read(fd, buf)
		if err != nil || string(buf[:n]) != "bottom\n" {
			t.Errorf("read %q, %v", buf[:n], err)
		}
		if _, err := unix.Openat(dirfd, "new", syscall.O_CREAT|syscall.O_RDONLY, 0o600); err != syscall.EROFS {
			t.Errorf("openat O_CREAT: got %v, want EROFS", err)
		}
	})

	t.Run("XAttr", func(t *testing.T) {
		fn := filepath.Join(mnt, "xattrs/basic")
		buf := make([]byte, 1024)
		if n, err := unix.Getxattr(fn, "user.nosuch", buf); err != syscall.ENODATA {
			t.Errorf("Getxattr of a missing name: got %q, %v, want ENODATA", buf[:max(n, 0)], err)
		}
		sz, err := unix.Listxattr(fn, nil)
		if err != nil {
			t.Fatalf("Listxattr: %v", err)
		}
		buf = make([]byte, sz)
		if n, err := unix.Listxattr(fn, buf); err != nil || n != sz {
			t.Fatalf("Listxattr: %d, %v; want %d", n, err, sz)
		}
		if !bytes.Contains(buf, []byte("user.small\x00")) {
			t.Errorf("Listxattr: %q lacks user.small", buf)
		}
		if sz, err := unix.Getxattr(fn, "user.small", nil); err != nil || sz != 1 {
			t.Errorf("Getxattr(nil): %d, %v; want 1", sz, err)
		}
		if sz, err := unix.Getxattr(fn, "user.small", buf); err != nil || string(buf[:sz]) != "v" {
			t.Errorf("Getxattr: %q, %v; want \"v\"", buf[:max(sz, 0)], err)
		}
	})

	t.Run("XAttrLarge", func(t *testing.T) {
		fn := filepath.Join(mnt, "xattrs/big")
		sz, err := unix.Getxattr(fn, "user.big", nil)
		if err != nil || sz != 3000 {
			t.Fatalf("Getxattr(nil): %d, %v; want 3000", sz, err)
		}
		if _, err := unix.Getxattr(fn, "user.big", make([]byte, sz-1)); err != syscall.ERANGE {
			t.Errorf("Getxattr into a short buffer: got %v, want ERANGE", err)
		}
		buf := make([]byte, sz)
		if n, err := unix.Getxattr(fn, "user.big", buf); err != nil || n != sz {
			t.Errorf("Getxattr: %d, %v", n, err)
		}
	})
}

// readAllDirEntries is posixtest's helper of the same name.
func readAllDirEntries(t *testing.T, fd int) []fuse.DirEntry {
	t.Helper()
	var buf [4096]byte
	var result []fuse.DirEntry
	for {
		n, err := unix.ReadDirent(fd, buf[:])
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return result
		}
		for todo := buf[:n]; len(todo) > 0; {
			var de fuse.DirEntry
			todo = todo[de.Parse(todo):]
			result = append(result, de)
		}
	}
}

func openFds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
