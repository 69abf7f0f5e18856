//go:build linux

package testimg

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"syscall"
	"testing"
)

// Walk returns every file under dir (dir itself as ".") as the kernel shows
// it: statx without following symlinks, readlink, every xattr, and for
// regular files the SHA-256 and the SEEK_DATA/SEEK_HOLE segments. It opens
// files and directories with O_NOATIME where allowed so that walking a
// source tree does not disturb the atimes mke2fs will copy. KernelWalk uses
// it on a mounted image; tests can use it on Source trees.
func Walk(t testing.TB, dir string) map[string]Entry {
	t.Helper()
	out, err := walk(dir)
	if err != nil {
		t.Fatalf("testimg: walking %s: %v", dir, err)
	}
	return out
}

func walk(root string) (map[string]Entry, error) {
	out := map[string]Entry{}
	var visit func(rel string) error
	visit = func(rel string) error {
		abs := filepath.Join(root, filepath.FromSlash(rel))
		e, err := entryOf(abs, rel)
		if err != nil {
			return err
		}
		out[rel] = e
		if e.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			return nil
		}
		names, err := readDirNames(abs)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		for _, n := range names {
			child := n
			if rel != "." {
				child = path.Join(rel, n)
			}
			if err := visit(child); err != nil {
				return err
			}
		}
		return nil
	}
	return out, visit(".")
}

// openNoatime opens path read-only, adding O_NOATIME when the caller may
// (owner or CAP_FOWNER) and retrying without it otherwise.
func openNoatime(path string, flags int) (*os.File, error) {
	fd, err := syscall.Open(path, flags|syscall.O_RDONLY|syscall.O_CLOEXEC|oNoatime, 0)
	if errors.Is(err, syscall.EPERM) {
		fd, err = syscall.Open(path, flags|syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

func readDirNames(dir string) ([]string, error) {
	f, err := openNoatime(dir, syscall.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

func entryOf(abs, rel string) (Entry, error) {
	st, err := lstatx(abs)
	if err != nil {
		return Entry{}, fmt.Errorf("statx %s: %w", rel, err)
	}
	e := Entry{
		Path:  rel,
		Ino:   st.ino,
		Mode:  uint32(st.mode),
		Uid:   st.uid,
		Gid:   st.gid,
		Size:  int64(st.size),
		Nlink: uint64(st.nlink),
		Atime: st.atime,
		Mtime: st.mtime,
		Ctime: st.ctime,
	}
	if st.haveBtime {
		e.Btime = st.btime
	}
	switch e.Mode & syscall.S_IFMT {
	case syscall.S_IFCHR, syscall.S_IFBLK:
		e.Rdev = Mkdev(st.rdevMajor, st.rdevMinor)
	case syscall.S_IFLNK:
		if e.Target, err = os.Readlink(abs); err != nil {
			return Entry{}, err
		}
	case syscall.S_IFREG:
		if err := fileData(abs, &e); err != nil {
			return Entry{}, fmt.Errorf("%s: %w", rel, err)
		}
	}
	names, err := llistxattr(abs)
	if err != nil && !errors.Is(err, syscall.ENOTSUP) {
		return Entry{}, fmt.Errorf("listxattr %s: %w", rel, err)
	}
	for _, n := range names {
		v, err := lgetxattr(abs, n)
		if errors.Is(err, syscall.ENODATA) {
			continue // removed between list and get; not ours to report
		}
		if err != nil {
			return Entry{}, fmt.Errorf("getxattr %s %s: %w", rel, n, err)
		}
		if e.Xattrs == nil {
			e.Xattrs = map[string][]byte{}
		}
		e.Xattrs[n] = v
	}
	return e, nil
}

// fileData fills in the SHA-256 and the data segments of a regular file.
func fileData(abs string, e *Entry) error {
	f, err := openNoatime(abs, syscall.O_NOFOLLOW)
	if err != nil {
		return err
	}
	defer f.Close()
	e.Segments = segments(int(f.Fd()), e.Size)
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	e.SHA256 = hex.EncodeToString(h.Sum(nil))
	return nil
}

// segments lists the data segments of an open file with SEEK_DATA and
// SEEK_HOLE. It returns nil ("not collected") if the kernel refuses: ext4
// (6.18) answers SEEK_HOLE on an inline-data inode whose size exceeds its
// inline data, which mke2fs -d makes of an all-hole file, with ENOENT.
func segments(fd int, size int64) [][2]int64 {
	segs := [][2]int64{}
	for off := int64(0); off < size; {
		d, err := lseek(fd, off, seekData)
		if errors.Is(err, syscall.ENXIO) {
			break // no data after off
		}
		if err != nil {
			return nil
		}
		h, err := lseek(fd, d, seekHole)
		if err != nil {
			return nil
		}
		segs = append(segs, [2]int64{d, h})
		off = h
	}
	return segs
}
