package ext4_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"testing"

	"safefs/internal/ext4"
	"safefs/internal/testimg"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testimg.Cleanup()
	os.Exit(code)
}

// walkLimits bound a walk of a possibly hostile image.
type walkLimits struct {
	maxEntries int   // names visited in all
	maxRead    int64 // bytes of file data read per file
}

var defaultLimits = walkLimits{maxEntries: 1 << 20, maxRead: 16 << 30}

// walkResult is what a walk saw: entries by path and per-path errors.
type walkResult struct {
	entries map[string]testimg.Entry
	errs    []error
}

// openImage opens an image file read-only through ext4.Open.
func openImage(t testing.TB, img string, opts *ext4.Options) *ext4.FS {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	o := ext4.Options{}
	if opts != nil {
		o = *opts
	}
	o.DeviceSize = st.Size()
	fsys, err := ext4.Open(f, &o)
	if err != nil {
		t.Fatalf("%s: %v", img, err)
	}
	return fsys
}

func toTime(ts ext4.Timestamp) testimg.Time { return testimg.Time{Sec: ts.Sec, Nsec: int64(ts.Nsec)} }

// segments lists the data segments of a regular file as SEEK_DATA and
// SEEK_HOLE on the kernel's mount report them: mapped blocks (unwritten
// ones are holes), clipped to the size; inline data is one segment.
func segments(fsys *ext4.FS, in *ext4.Inode) ([][2]int64, error) {
	segs := [][2]int64{}
	size := int64(in.Size)
	if size == 0 {
		return segs, nil
	}
	if in.HasInlineData() {
		return append(segs, [2]int64{0, size}), nil
	}
	bs := int64(fsys.BlockSize())
	for lblk := uint64(0); int64(lblk)*bs < size; {
		ext, err := fsys.MapBlock(in, lblk)
		if err != nil {
			return nil, err
		}
		if ext.Kind == ext4.Mapped {
			start := int64(ext.Logical) * bs
			end := min(int64(ext.Logical+ext.Len)*bs, size)
			if n := len(segs); n > 0 && segs[n-1][1] == start {
				segs[n-1][1] = end
			} else {
				segs = append(segs, [2]int64{start, end})
			}
		}
		if ext.Len > uint64(size/bs+1) {
			break
		}
		lblk = ext.Logical + ext.Len
	}
	return segs, nil
}

// entryOf describes one inode in the oracle's terms.
func entryOf(fsys *ext4.FS, p string, in *ext4.Inode, lim walkLimits) (testimg.Entry, error) {
	e := testimg.Entry{
		Path:  p,
		Ino:   uint64(in.Ino),
		Mode:  uint32(in.Mode),
		Uid:   in.Uid,
		Gid:   in.Gid,
		Size:  int64(in.Size),
		Nlink: uint64(in.LinksCount),
		Atime: toTime(in.Atime),
		Mtime: toTime(in.Mtime),
		Ctime: toTime(in.Ctime),
	}
	if in.HasCrtime {
		e.Btime = toTime(in.Crtime)
	}
	switch in.Type() {
	case ext4.ModeChar, ext4.ModeBlock:
		maj, min := in.Rdev()
		e.Rdev = testimg.Mkdev(maj, min)
	case ext4.ModeSymlink:
		tg, err := fsys.Readlink(in)
		if err != nil {
			return e, err
		}
		e.Target = string(tg)
	case ext4.ModeRegular:
		h := sha256.New()
		buf := make([]byte, min(1<<20, max(in.Size, 1)))
		for off := int64(0); off < int64(in.Size) && off < lim.maxRead; {
			n, err := fsys.ReadAt(in, buf, off)
			h.Write(buf[:n])
			off += int64(n)
			if err == io.EOF {
				break
			}
			if err != nil {
				return e, err
			}
		}
		e.SHA256 = hex.EncodeToString(h.Sum(nil))
		segs, err := segments(fsys, in)
		if err != nil {
			return e, err
		}
		e.Segments = segs
	}
	names, err := fsys.ListXattrs(in)
	if err != nil {
		return e, err
	}
	for _, n := range names {
		v, err := fsys.GetXattr(in, n)
		if errors.Is(err, ext4.ErrNoXattr) {
			continue
		}
		if err != nil {
			return e, fmt.Errorf("xattr %s: %w", n, err)
		}
		if e.Xattrs == nil {
			e.Xattrs = map[string][]byte{}
		}
		e.Xattrs[n] = v
	}
	return e, nil
}

// walkFS visits every name reachable from the root, checking on the way
// that Lookup finds each name ReadDir listed. It never stops at an error:
// errors are collected with their paths, as a FUSE server would log them.
func walkFS(fsys *ext4.FS, lim walkLimits) walkResult {
	res := walkResult{entries: map[string]testimg.Entry{}}
	fail := func(p string, err error) { res.errs = append(res.errs, fmt.Errorf("%s: %w", p, err)) }
	seenDirs := map[uint32]bool{}
	visited := 0
	var walk func(ino uint32, p string)
	walk = func(ino uint32, p string) {
		visited++
		if visited > lim.maxEntries {
			return
		}
		in, err := fsys.Inode(ino)
		if err != nil {
			fail(p, err)
			return
		}
		e, err := entryOf(fsys, p, in, lim)
		if err != nil {
			fail(p, err)
		}
		res.entries[p] = e
		if !in.IsDir() || seenDirs[ino] {
			return
		}
		seenDirs[ino] = true
		type child struct {
			name string
			ino  uint32
		}
		var kids []child
		err = fsys.ReadDir(in, 0, func(d ext4.DirEntry) bool {
			n := string(d.Name)
			if n != "." && n != ".." {
				kids = append(kids, child{n, d.Ino})
			}
			return len(kids) < lim.maxEntries
		})
		if err != nil {
			fail(p, err)
		}
		for _, k := range kids {
			cp := path.Join(p, k.name)
			got, _, err := fsys.Lookup(in, []byte(k.name))
			if err != nil {
				fail(cp, fmt.Errorf("lookup: %w", err))
			} else if got != k.ino {
				fail(cp, fmt.Errorf("lookup found inode %d, readdir listed %d", got, k.ino))
			}
			walk(k.ino, cp)
		}
	}
	walk(2, ".")
	return res
}

// resolve looks up a "/"-separated path from the root.
func resolve(fsys *ext4.FS, p string) (*ext4.Inode, error) {
	in, err := fsys.Inode(2)
	for _, part := range strings.Split(p, "/") {
		if err != nil || part == "" {
			continue
		}
		var ino uint32
		if ino, _, err = fsys.Lookup(in, []byte(part)); err == nil {
			in, err = fsys.Inode(ino)
		}
	}
	return in, err
}

// mustResolve is resolve for test set-up: a failure ends the test.
func mustResolve(tb testing.TB, fsys *ext4.FS, p string) *ext4.Inode {
	tb.Helper()
	in, err := resolve(fsys, p)
	if err != nil {
		tb.Fatalf("%s: %v", p, err)
	}
	return in
}
