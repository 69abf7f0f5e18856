package ext4_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"safefs/internal/ext4"
	"safefs/internal/testimg"
)

// countingReader counts the reads that reach the device.
type countingReader struct {
	r     io.ReaderAt
	reads atomic.Int64
	bytes atomic.Int64
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	c.reads.Add(1)
	c.bytes.Add(int64(len(p)))
	return c.r.ReadAt(p, off)
}

// sparseDevice is a device of any size that reads as zeros except for the
// bytes written into it: enough to hold a superblock claiming a huge
// filesystem without allocating it.
type sparseDevice struct{ head []byte }

func (d *sparseDevice) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	if off < int64(len(d.head)) {
		copy(p, d.head[off:])
	}
	return len(p), nil
}

// TestOpenIsLazy opens a 16 MiB and a 16 TiB filesystem and checks that
// Open reads the same thing from both: the superblock and nothing else.
func TestOpenIsLazy(t *testing.T) {
	for _, blocks := range []uint32{16 << 10 /* 16 MiB */, 1<<32 - 1 /* ~4 TiB of 1 KiB blocks */} {
		sb := minimalSuperblock()
		groups := (uint64(blocks) - 1 + 8191) / 8192
		le32put(sb[0x04:], blocks)
		le32put(sb[0x00:], uint32(groups*128))
		dev := &countingReader{r: &sparseDevice{head: append(make([]byte, 1024), sb...)}}
		if _, err := ext4.Open(dev, nil); err != nil {
			t.Fatalf("%d blocks: %v", blocks, err)
		}
		if dev.reads.Load() != 1 || dev.bytes.Load() != ext4.SuperblockSize {
			t.Errorf("%d blocks: Open made %d reads of %d bytes; want one read of the superblock", blocks, dev.reads.Load(), dev.bytes.Load())
		}
	}
	// And a real 16 TiB geometry: 4 KiB blocks, 64-bit, 131072 groups.
	sb := minimalSuperblock()
	le32put(sb[0x18:], 2)        // 4 KiB blocks
	le32put(sb[0x1C:], 2)        // cluster = block
	le32put(sb[0x14:], 0)        // first data block
	le32put(sb[0x20:], 32768)    // blocks per group
	le32put(sb[0x24:], 32768)    // clusters per group
	le32put(sb[0x28:], 8192)     // inodes per group
	le32put(sb[0x00:], 1<<30)    // inodes: 131072 groups * 8192
	le32put(sb[0x04:], 0)        // blocks lo
	le32put(sb[0x150:], 1)       // blocks hi: 2^32 blocks = 16 TiB
	le32put(sb[0x60:], 0x80|0x2) // 64bit, filetype
	sb[0xFE] = 64                // desc size
	dev := &countingReader{r: &sparseDevice{head: append(make([]byte, 1024), sb...)}}
	fsys, err := ext4.Open(dev, nil)
	if err != nil {
		t.Fatalf("16 TiB: %v", err)
	}
	if got := fsys.Superblock().BlocksCount; got != 1<<32 {
		t.Fatalf("16 TiB: block count %d", got)
	}
	if dev.reads.Load() != 1 {
		t.Errorf("16 TiB: Open made %d reads; want 1", dev.reads.Load())
	}
}

// TestNeedsRecovery checks that a filesystem whose journal needs recovery
// is reported, and opens with NoRecovery.
func TestNeedsRecovery(t *testing.T) {
	img := testimg.Build(t, testimg.Spec{Name: "recover", MkfsArgs: []string{"-t", "ext4"}, SizeMB: 16, Tree: testimg.TreeSmall})
	dirty := filepath.Join(t.TempDir(), "dirty.img")
	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dirty, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("debugfs", "-w", "-R", "feature needs_recovery", dirty).CombinedOutput(); err != nil {
		t.Skipf("debugfs: %v %s", err, out)
	}
	f, err := os.Open(dirty)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := ext4.Open(f, nil); !errors.Is(err, ext4.ErrNeedsRecovery) {
		t.Fatalf("Open of a filesystem needing recovery: got %v, want ErrNeedsRecovery", err)
	}
	fsys, err := ext4.Open(f, &ext4.Options{NoRecovery: true})
	if err != nil {
		t.Fatalf("Open with NoRecovery: %v", err)
	}
	if res := walkFS(fsys, defaultLimits); len(res.errs) > 0 || len(res.entries) < 3 {
		t.Errorf("walk with NoRecovery: %d entries, errors %v", len(res.entries), res.errs)
	}
}

// TestTruncatedDevice checks that an image shorter than its filesystem is
// refused with a message saying so.
func TestTruncatedDevice(t *testing.T) {
	img := testimg.Build(t, testimg.Spec{Name: "trunc", MkfsArgs: []string{"-t", "ext4"}, SizeMB: 16, Tree: testimg.TreeSmall})
	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	short := data[:len(data)/2]
	_, err = ext4.Open(bytes.NewReader(short), &ext4.Options{DeviceSize: int64(len(short))})
	var fe *ext4.FormatError
	if !errors.As(err, &fe) || !bytes.Contains([]byte(err.Error()), []byte("truncated")) {
		t.Fatalf("got %v, want a FormatError about truncation", err)
	}
}

// TestReadDirCursor resumes ReadDir from every cursor it hands out and
// checks that the entries that follow are the same as in one pass.
func TestReadDirCursor(t *testing.T) {
	for _, spec := range []string{"ext4-default", "ext4-inline", "ext2", "ext4-1k"} {
		t.Run(spec, func(t *testing.T) {
			fsys := openImage(t, testimg.Build(t, testimg.SpecNamed(t, spec)), nil)
			res := walkFS(fsys, defaultLimits)
			for p, e := range res.entries {
				in, err := fsys.Inode(uint32(e.Ino))
				if err != nil || !in.IsDir() {
					continue
				}
				var all []ext4.DirEntry
				fsys.ReadDir(in, 0, func(d ext4.DirEntry) bool { all = append(all, d); return true })
				var pos uint64
				for i := 0; ; i++ {
					var got *ext4.DirEntry
					fsys.ReadDir(in, pos, func(d ext4.DirEntry) bool { got = &d; return false })
					if got == nil {
						if i != len(all) {
							t.Errorf("%s: cursor walk ended after %d entries, want %d", p, i, len(all))
						}
						break
					}
					if i >= len(all) || string(got.Name) != string(all[i].Name) || got.Ino != all[i].Ino {
						t.Errorf("%s: entry %d via cursor %d: got %q", p, i, pos, got.Name)
						break
					}
					pos = got.Next
				}
			}
		})
	}
}

// TestConcurrentReaders walks one filesystem from 16 goroutines at once
// with caches small enough to evict all the time, and checks that every
// walk sees what a single walk saw. Run with -race it also checks the
// caches' locking.
func TestConcurrentReaders(t *testing.T) {
	img := testimg.Build(t, testimg.SpecNamed(t, "ext4-default"))
	want := walkFS(openImage(t, img, nil), defaultLimits)
	fsys := openImage(t, img, &ext4.Options{BlockCacheBytes: 64 << 10, InodeCacheBytes: 32 * 1024})
	var wg sync.WaitGroup
	results := make([]walkResult, 16)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = walkFS(fsys, defaultLimits)
		}()
	}
	wg.Wait()
	for i, r := range results {
		if len(r.errs) > 0 {
			t.Errorf("walker %d: %v", i, r.errs[0])
		}
		testimg.Compare(t, want.entries, r.entries, testimg.CompareOpts{})
	}
}

// TestTinyDevice checks that a device too small for a superblock is a
// FormatError whether or not its size is known.
func TestTinyDevice(t *testing.T) {
	for _, size := range []int64{0, 1000} {
		_, err := ext4.Open(bytes.NewReader(make([]byte, 1000)), &ext4.Options{DeviceSize: size})
		var fe *ext4.FormatError
		if !errors.As(err, &fe) {
			t.Errorf("DeviceSize %d: got %v, want a FormatError", size, err)
		}
	}
}

// TestInodeCacheBytes checks that the inode cache's bound holds in bytes
// whatever the inode size: with 1 KiB inodes, a budget of 64 KiB keeps
// fewer than 64 of them.
func TestInodeCacheBytes(t *testing.T) {
	img := testimg.Build(t, testimg.SpecNamed(t, "ext4-1024inode"))
	const budget = 64 << 10
	fsys := openImage(t, img, &ext4.Options{InodeCacheBytes: budget})
	if fsys.Superblock().InodeSize != 1024 {
		t.Fatalf("inode size %d, want 1024", fsys.Superblock().InodeSize)
	}
	for ino := uint32(11); ino < 1000; ino++ {
		fsys.Inode(ino) // unused inodes fail, but are read and cached all the same
	}
	if n := ext4.CachedInodeBytes(fsys); n == 0 || n > budget {
		t.Errorf("the inode cache holds %d bytes of on-disk inodes, want some and at most %d", n, budget)
	}
}

// TestDirectoryLargerThanFilesystem gives a directory a size beyond the
// whole filesystem's: listing it and looking a name up in it must fail
// as corruption at once, not read that many blocks.
func TestDirectoryLargerThanFilesystem(t *testing.T) {
	src := testimg.Build(t, testimg.Spec{Name: "bigdir", MkfsArgs: []string{"-t", "ext4", "-O", "^metadata_csum"}, SizeMB: 16, Tree: testimg.TreeSmall})
	img := filepath.Join(t.TempDir(), "bigdir.img")
	if err := testimg.CopyFile(src, img); err != nil {
		t.Fatal(err)
	}
	// 32 MiB on a 16 MiB filesystem.
	if out, err := exec.Command("debugfs", "-w", "-R", "sif /dir size 33554432", img).CombinedOutput(); err != nil {
		t.Fatalf("debugfs: %v: %s", err, out)
	}
	fsys := openImage(t, img, nil)
	dir := mustResolve(t, fsys, "dir")
	err := fsys.ReadDir(dir, 0, func(ext4.DirEntry) bool { return true })
	var ce *ext4.CorruptError
	if !errors.As(err, &ce) || ce.Ino != dir.Ino {
		t.Errorf("ReadDir: %v, want a CorruptError naming inode %d", err, dir.Ino)
	}
	if _, _, err := fsys.Lookup(dir, []byte("data")); !errors.As(err, &ce) {
		t.Errorf("Lookup: %v, want a CorruptError", err)
	}
}
