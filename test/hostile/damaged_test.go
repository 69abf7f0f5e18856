package hostile

import (
	"bytes"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"safefs/internal/testimg"
	"safefs/internal/testmount"
)

// SeedsEnv names the environment variable that sets how many corrupted
// variants TestMutation makes of each image: by default 1, or 8 in the
// long run (LongEnv).
const SeedsEnv = "SAFEFS_MUTATION_SEEDS"

// LongEnv names the environment variable that, when non-empty, asks for
// the long run (make hostile): more variants of each image, and every
// entry of the 100,000-entry directories looked up, not one in ten.
const LongEnv = "SAFEFS_HOSTILE_LONG"

// TestMutation corrupts random bytes in the metadata of every image of
// the test matrix, with deterministic seeds, and mounts and walks each
// variant (see mountAndWalk for what must hold). By default it makes one
// variant of each image and looks up one entry in ten of directories of
// over 10,000 entries; the long run (LongEnv) makes 8 and looks up all. Which blocks are
// metadata is e2image's answer, not ours: the blocks `e2image -r` copies
// (superblocks, descriptors, bitmaps, inode tables, directories, extent
// and xattr blocks, symlinks, the journal), less the ones that are all
// zeros.
func TestMutation(t *testing.T) {
	testmount.Require(t)
	if _, err := exec.LookPath("e2image"); err != nil {
		t.Skip("e2image not installed (e2fsprogs)")
	}
	// The longest test of the package, and the first in it: parallel,
	// it runs beside all the others (its images include the mmp one,
	// whose build sleeps 22 s in e2fsck and debugfs).
	t.Parallel()
	long := os.Getenv(LongEnv) != ""
	seeds := 1
	if long {
		seeds = 8
	}
	if s := os.Getenv(SeedsEnv); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive number", SeedsEnv, s)
		}
		seeds = n
	}
	svc := testmount.NewService(t)
	var rows []row
	served := 0
	for _, spec := range testimg.Matrix() {
		orig := testimg.Build(t, spec)
		img := filepath.Join(t.TempDir(), spec.Name+".img")
		if err := testimg.CopyFile(orig, img); err != nil {
			t.Fatal(err)
		}
		blocks, bs := metadataBlocks(t, img)
		if len(blocks) == 0 {
			t.Errorf("%s: e2image found no metadata blocks", spec.Name)
			continue
		}
		lim := defaultLimits
		if !long {
			// A full walk of 100,000 entries takes 10 s; every
			// name is still listed.
			lim.statEvery = 10
		}
		for seed := 1; seed <= seeds; seed++ {
			name := fmt.Sprintf("%s/%d", spec.Name, seed)
			restore := mutate(t, img, blocks, bs, spec.Name, uint64(seed))
			r := mountAndWalk(t, svc, name, img, lim)
			restore()
			if r.served {
				served++
			}
			rows = append(rows, r)
		}
	}
	t.Logf("corrupted matrix images: %d variants, %d served, %d refused\n%s", len(rows), served, len(rows)-served, table(rows))
}

// TestCorpus mounts every image of the e2fsprogs corpus through
// mount.safe and walks it (see mountAndWalk for what must hold), then
// prints a table of what was served and refused.
func TestCorpus(t *testing.T) {
	dir := testimg.CorpusDir()
	if dir == "" {
		t.Skip("no e2fsprogs corpus beside the repository (../shared/corpus/e2fsprogs) and $" + testimg.CorpusEnv + " unset")
	}
	testmount.Require(t)
	t.Parallel()
	svc := testmount.NewService(t)
	tmp := t.TempDir()
	var rows []row
	served := 0
	for _, c := range testimg.CorpusImages(dir) {
		img := filepath.Join(tmp, c.Name+".img")
		if err := c.WriteFile(img, 1<<30); err != nil {
			t.Errorf("%s: %v", c.Name, err)
			continue
		}
		r := mountAndWalk(t, svc, c.Name, img, defaultLimits)
		if r.served {
			served++
		}
		rows = append(rows, r)
	}
	t.Logf("e2fsprogs corpus: %d images, %d served, %d refused\n%s", len(rows), served, len(rows)-served, table(rows))
}

// metadataBlocks returns the numbers of the non-zero blocks that
// `e2image -r` copies from img, and the block size.
func metadataBlocks(t *testing.T, img string) ([]int64, int64) {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "meta.raw")
	if out, err := exec.Command("e2image", "-r", img, raw).CombinedOutput(); err != nil {
		t.Fatalf("e2image -r %s: %v\n%s", img, err, out)
	}
	defer os.Remove(raw)
	out, err := exec.Command("dumpe2fs", "-h", img).Output()
	if err != nil {
		t.Fatalf("dumpe2fs -h %s: %v", img, err)
	}
	var bs int64
	for _, l := range bytes.Split(out, []byte("\n")) {
		if v, ok := bytes.CutPrefix(l, []byte("Block size:")); ok {
			bs, _ = strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
		}
	}
	if bs == 0 {
		t.Fatalf("dumpe2fs -h %s: no block size", img)
	}
	f, err := os.Open(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	fd := int(f.Fd())
	var blocks []int64
	buf := make([]byte, bs)
	zero := make([]byte, bs)
	for off := int64(0); off < st.Size(); {
		d, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err != nil {
			break // ENXIO: no data after off
		}
		h, err := unix.Seek(fd, d, unix.SEEK_HOLE)
		if err != nil {
			t.Fatal(err)
		}
		for b := d / bs; b*bs < h; b++ {
			if _, err := f.ReadAt(buf, b*bs); err == nil && !bytes.Equal(buf, zero) {
				blocks = append(blocks, b)
			}
		}
		off = h
	}
	return blocks, bs
}

// mutate corrupts a few bytes in one to four of the metadata blocks of
// img, chosen by seed (and the image's name), and returns the function
// that puts the original bytes back.
func mutate(t *testing.T, img string, blocks []int64, bs int64, name string, seed uint64) func() {
	t.Helper()
	h := fnv.New64a()
	h.Write([]byte(name))
	rng := rand.New(rand.NewPCG(seed, h.Sum64()))
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	type saved struct {
		off int64
		b   byte
	}
	var undo []saved
	for range 1 + rng.IntN(4) {
		blk := blocks[rng.IntN(len(blocks))]
		for range 1 + rng.IntN(8) {
			off := blk*bs + rng.Int64N(bs)
			var b [1]byte
			if _, err := f.ReadAt(b[:], off); err != nil {
				t.Fatal(err)
			}
			undo = append(undo, saved{off, b[0]})
			switch rng.IntN(4) {
			case 0:
				b[0] ^= byte(1 + rng.IntN(255))
			case 1:
				b[0] = 0
			case 2:
				b[0] = 0xff
			default:
				b[0] += byte(1 - 2*rng.IntN(2)) // one more or one less
			}
			if _, err := f.WriteAt(b[:], off); err != nil {
				t.Fatal(err)
			}
		}
	}
	return func() {
		f, err := os.OpenFile(img, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for i := len(undo) - 1; i >= 0; i-- {
			if _, err := f.WriteAt([]byte{undo[i].b}, undo[i].off); err != nil {
				t.Fatal(err)
			}
		}
	}
}
