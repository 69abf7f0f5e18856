package fusefs_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"safefs/internal/fusefs"
	"safefs/internal/testimg"
)

// countingFS counts the requests that the caching policy should make
// rare.
type countingFS struct {
	*fusefs.FS
	mu sync.Mutex
	n  map[string]int
}

func (c *countingFS) count(key string) {
	c.mu.Lock()
	c.n[key]++
	c.mu.Unlock()
}

func (c *countingFS) get(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[key]
}

func (c *countingFS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	c.count("lookup " + name)
	return c.FS.Lookup(cancel, h, name, out)
}

func (c *countingFS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	c.count(fmt.Sprint("getattr ", in.NodeId))
	return c.FS.GetAttr(cancel, in, out)
}

func (c *countingFS) Statx(cancel <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	c.count(fmt.Sprint("statx ", in.NodeId))
	return c.FS.Statx(cancel, in, out)
}

func (c *countingFS) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	c.count(fmt.Sprint("readlink ", h.NodeId))
	return c.FS.Readlink(cancel, h)
}

func (c *countingFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	c.count(fmt.Sprint("read ", in.NodeId))
	return c.FS.Read(cancel, in, buf)
}

func (c *countingFS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	c.count(fmt.Sprint("readdir ", in.NodeId))
	return c.FS.ReadDir(cancel, in, out)
}

func (c *countingFS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	c.count(fmt.Sprint("readdir ", in.NodeId))
	return c.FS.ReadDirPlus(cancel, in, out)
}

// TestCaching checks the caching policy where it saves round trips:
// entries and attributes (one LOOKUP, no GETATTR), creation times (one
// STATX), negative entries (one LOOKUP for a missing name), file data
// across opens (keep_cache), directory listings across opens (cache_dir)
// and symlink targets: asking twice costs one request.
func TestCaching(t *testing.T) {
	img := testimg.Build(t, testimg.SpecNamed(t, "ext4-default"))
	var c *countingFS
	m := mountImage(t, img, mountConfig{wrapFS: func(fs *fusefs.FS) fuse.RawFileSystem {
		c = &countingFS{FS: fs, n: map[string]int{}}
		return c
	}})
	ino := func(rel string) uint64 {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(m.Dir, rel), &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	for i := 0; i < 2; i++ {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(m.Dir, "files/size-100"), &st); err != nil {
			t.Fatal(err)
		}
		var sx unix.Statx_t
		if err := unix.Statx(unix.AT_FDCWD, filepath.Join(m.Dir, "files/size-100"), unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &sx); err != nil {
			t.Fatal(err)
		}
		if sx.Mask&unix.STATX_BTIME == 0 {
			t.Errorf("statx: no creation time")
		}
		if err := unix.Lstat(filepath.Join(m.Dir, "files/no-such-file"), &st); err != syscall.ENOENT {
			t.Errorf("stat of a missing file: got %v, want ENOENT", err)
		}
		if b, err := os.ReadFile(filepath.Join(m.Dir, "files/size-100")); err != nil || len(b) != 100 {
			t.Errorf("read: %d bytes, %v", len(b), err)
		}
		if _, err := os.Readlink(filepath.Join(m.Dir, "symlinks/len100")); err != nil {
			t.Error(err)
		}
		if ents, err := os.ReadDir(filepath.Join(m.Dir, "dirs/many")); err != nil || len(ents) != 500 {
			t.Errorf("readdir: %d entries, %v", len(ents), err)
		}
	}
	file, link, dir := ino("files/size-100"), ino("symlinks/len100"), ino("dirs/many")
	for _, k := range []struct {
		key  string
		want int
	}{
		{"lookup size-100", 1},
		{fmt.Sprint("getattr ", file), 0},
		{fmt.Sprint("statx ", file), 1},
		{"lookup no-such-file", 1},
		{fmt.Sprint("read ", file), 1},
		{fmt.Sprint("readlink ", link), 1},
	} {
		if got := c.get(k.key); got != k.want {
			t.Errorf("%s: %d requests, want %d", k.key, got, k.want)
		}
	}
	// The 500 entries take a few READDIR requests, all in the first pass.
	first := c.get(fmt.Sprint("readdir ", dir))
	if _, err := os.ReadDir(filepath.Join(m.Dir, "dirs/many")); err != nil {
		t.Fatal(err)
	}
	if again := c.get(fmt.Sprint("readdir ", dir)); again != first || first == 0 {
		t.Errorf("readdir: %d requests for the first listing, %d after a third", first, again)
	}
}
