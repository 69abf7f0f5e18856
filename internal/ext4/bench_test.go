package ext4_test

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"safefs/internal/ext4"
	"safefs/internal/testimg"
)

// fragmentedImage builds an image holding "frag", a file of n one-block
// pieces separated by one-block holes: n extents, a two-level tree.
func fragmentedImage(tb testing.TB, n int) string {
	tb.Helper()
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		tb.Skip("mkfs.ext4 not installed")
	}
	dir := tb.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		tb.Fatal(err)
	}
	f, err := os.Create(filepath.Join(src, "frag"))
	if err != nil {
		tb.Fatal(err)
	}
	// Never all zeros: mke2fs -d turns zero blocks into holes.
	block := bytes.Repeat([]byte{0xAA}, 4096)
	for i := 0; i < n; i++ {
		block[0] = byte(i)
		if _, err := f.WriteAt(block, int64(i)*2*4096); err != nil {
			tb.Fatal(err)
		}
	}
	f.Close()
	img := filepath.Join(dir, "frag.img")
	size := fmt.Sprintf("%dM", n*4096/(1<<20)+16)
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", "-d", src, img, size).CombinedOutput(); err != nil {
		tb.Fatalf("mkfs: %v\n%s", err, out)
	}
	return img
}

// BenchmarkMapFragmented maps every block of a file of 20,000 extents in
// order, and at random, as a sequential and a random reader would.
func BenchmarkMapFragmented(b *testing.B) {
	const n = 20000
	fsys := openImage(b, fragmentedImage(b, n), nil)
	in := mustResolve(b, fsys, "frag")
	b.Run("sequential", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			lblk := uint64(i % (2 * n))
			if _, err := fsys.MapBlock(in, lblk); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("random", func(b *testing.B) {
		r := rand.New(rand.NewSource(1))
		for i := 0; i < b.N; i++ {
			if _, err := fsys.MapBlock(in, uint64(r.Intn(2*n))); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestMapFragmented checks the 20,000-extent file block by block against
// the layout it was written with.
func TestMapFragmented(t *testing.T) {
	const n = 3000
	fsys := openImage(t, fragmentedImage(t, n), nil)
	in := mustResolve(t, fsys, "frag")
	buf := make([]byte, 4096)
	for lblk := uint64(0); lblk < 2*n-1; lblk++ {
		ext, err := fsys.MapBlock(in, lblk)
		if err != nil {
			t.Fatalf("block %d: %v", lblk, err)
		}
		want := ext4.Hole
		if lblk%2 == 0 {
			want = ext4.Mapped
		}
		if ext.Kind != want || ext.Len != 1 {
			t.Fatalf("block %d: got %s of %d blocks, want %s of 1", lblk, ext.Kind, ext.Len, want)
		}
		if want == ext4.Mapped {
			if _, err := fsys.ReadAt(in, buf, int64(lblk)*4096); err != nil || buf[0] != byte(lblk/2) {
				t.Fatalf("block %d: read %v, first byte %d", lblk, err, buf[0])
			}
		}
	}
}

// largeDir opens the 100,000-entry directory of the largedir image.
func largeDir(tb testing.TB) (*ext4.FS, *ext4.Inode) {
	if testing.Short() {
		tb.Skip("the 100,000-entry directory image is not built in -short mode")
	}
	fsys := openImage(tb, testimg.Build(tb, testimg.SpecNamed(tb, "ext4-largedir")), nil)
	return fsys, mustResolve(tb, fsys, "big")
}

// TestLookupIsIndexed checks that a lookup in the 100,000-entry directory
// reads a handful of blocks (the index path and the leaf), not the
// directory: it counts device reads with the block cache too small to help.
func TestLookupIsIndexed(t *testing.T) {
	if testing.Short() {
		t.Skip("the 100,000-entry directory image is not built in -short mode")
	}
	img := testimg.Build(t, testimg.SpecNamed(t, "ext4-largedir"))
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dev := &countingReader{r: f}
	fsys, err := ext4.Open(dev, &ext4.Options{BlockCacheBytes: 1})
	if err != nil {
		t.Fatal(err)
	}
	dir := mustResolve(t, fsys, "big")
	dirBlocks := dir.Size / uint64(fsys.BlockSize())
	for _, i := range []int{0, 1, 4242, 50000, testimg.LargeDirEntries - 1} {
		name := testimg.LargeDirName(i)
		before := dev.reads.Load()
		if _, _, err := fsys.Lookup(dir, []byte(name)); err != nil {
			t.Fatalf("lookup %s: %v", name, err)
		}
		// Root, up to two index levels, the leaf (and maybe its
		// neighbour on a hash collision), plus extent-tree blocks.
		if reads := dev.reads.Load() - before; reads > 12 {
			t.Errorf("lookup %s read %d blocks of a %d-block directory: not an indexed lookup", name, reads, dirBlocks)
		}
	}
}

// BenchmarkLookupLargeDir looks up random names in the 100,000-entry
// directory (and one that is absent).
func BenchmarkLookupLargeDir(b *testing.B) {
	fsys, dir := largeDir(b)
	r := rand.New(rand.NewSource(1))
	names := make([][]byte, 1024)
	for i := range names {
		names[i] = []byte(testimg.LargeDirName(r.Intn(testimg.LargeDirEntries)))
	}
	b.Run("present", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, _, err := fsys.Lookup(dir, names[i%len(names)]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("absent", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			fsys.Lookup(dir, []byte("no-such-name"))
		}
	})
}

// TestThreeLevelHtree checks that the ext4-largedir-3level image really
// has a three-level index (so that the kernel oracle's walk, which looks
// up every name, exercises one), reading dx_root's indirect_levels from
// the block debugfs maps, and that lookups of names spread over the whole
// hash range succeed.
func TestThreeLevelHtree(t *testing.T) {
	if testing.Short() {
		t.Skip("the three-level htree image is not built in -short mode")
	}
	img := testimg.Build(t, testimg.SpecNamed(t, "ext4-largedir-3level"))
	out := strings.TrimSpace(testimg.Debugfs(t, img, "bmap /big 0"))
	pblk, err := strconv.ParseUint(out, 10, 64)
	if err != nil {
		t.Fatalf("debugfs bmap: %q", out)
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	root := make([]byte, 32)
	if _, err := f.ReadAt(root, int64(pblk)*1024); err != nil {
		t.Fatal(err)
	}
	if levels := root[30]; levels != 2 {
		t.Fatalf("dx_root of /big has indirect_levels %d, want 2 (a three-level tree)", levels)
	}
	fsys := openImage(t, img, nil)
	big := mustResolve(t, fsys, "big")
	for i := 0; i < testimg.LargeDirEntries; i += 997 {
		if _, _, err := fsys.Lookup(big, []byte(testimg.LargeDirLongName(i))); err != nil {
			t.Errorf("lookup %d: %v", i, err)
		}
	}
	if _, _, err := fsys.Lookup(big, []byte("absent")); err != ext4.ErrNotFound {
		t.Errorf("lookup of an absent name: %v", err)
	}
}
