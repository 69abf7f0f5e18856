package hostile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"safefs/internal/testimg"
	"safefs/internal/testmount"
)

// The images of TestLimits are written here, structure by structure,
// where mke2fs -d would take far too long (a million directory entries)
// or cannot go (a million extents, an xattr block shared by thousands of
// inodes): mke2fs -d lays out a tree whose files give the blocks, and
// the test writes directory blocks, extent blocks and inode fields into
// those blocks. The images have no metadata checksums, so nothing else
// needs updating; none of them is a filesystem e2fsck would pass, which
// is the point.

const craftBlock = 4096

// TestLimits serves images whose sizes a hostile image could choose, each
// within the daemon's memory bound (mountAnd checks VmHWM against
// memoryBound) and without a hang: a directory of a million entries, a
// file of a million extents (4 GiB, read whole), a directory chain 4,000 deep that loops back
// on itself, and one xattr block shared by 5,000 inodes.
func TestLimits(t *testing.T) {
	testmount.Require(t)
	t.Parallel()
	var rows []row
	t.Run("million-entry directory", func(t *testing.T) { rows = append(rows, millionEntries(t)) })
	t.Run("million-extent file", func(t *testing.T) { rows = append(rows, millionExtents(t)) })
	t.Run("million empty directory blocks", func(t *testing.T) { rows = append(rows, emptyBlocksDir(t)) })
	t.Run("directory larger than its filesystem", func(t *testing.T) { rows = append(rows, hugeDir(t)) })
	t.Run("4 TiB of one aliased block", func(t *testing.T) { rows = append(rows, aliasedBlockMap(t)) })
	t.Run("deep directory chain", func(t *testing.T) { rows = append(rows, deepChain(t)) })
	t.Run("shared xattr block", func(t *testing.T) { rows = append(rows, sharedXattrBlock(t)) })
	t.Logf("resource limits:\n%s", table(rows))
}

// putDirent appends a directory entry to b; recLen 0 means the entry's
// own size.
func putDirent(b []byte, ino uint32, name string, ftype byte, recLen int) []byte {
	if recLen == 0 {
		recLen = (8 + len(name) + 3) &^ 3
	}
	e := make([]byte, recLen)
	binary.LittleEndian.PutUint32(e[0:], ino)
	binary.LittleEndian.PutUint16(e[4:], uint16(recLen))
	e[6] = byte(len(name))
	e[7] = ftype
	copy(e[8:], name)
	return append(b, e...)
}

const millionEntries_ = 1000000

func bigDirName(i int) string { return fmt.Sprintf("f%07d", i) }

// millionEntries makes a linear (unindexed) directory "big" of a million
// entries, every one a hard link to the same file, and lists it whole,
// looking up one name in 997.
func millionEntries(t *testing.T) row {
	c := newCrafted(t)
	c.file("target", []byte("one file, a million names\n"))
	// 16-byte entries: 256 to a block, "." and ".." in the first.
	nblocks := (millionEntries_+2+255)/256 + 1
	c.file("big", randomData(7, nblocks*craftBlock))
	c.mkfs(64<<20, "-b", "4096", "-O", "^metadata_csum")
	blocks := c.blocks("/big")
	if len(blocks) != nblocks {
		t.Fatalf("big has %d blocks, want %d", len(blocks), nblocks)
	}
	_, bigIno := c.inodeOffset("/big", craftBlock)
	_, target := c.inodeOffset("/target", craftBlock)
	img, err := os.OpenFile(c.img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	next := 0
	for bi, blk := range blocks {
		var b []byte
		if bi == 0 {
			b = putDirent(b, uint32(bigIno), ".", 2, 12)
			b = putDirent(b, 2, "..", 2, 12)
		}
		for next < millionEntries_ && len(b)+16 <= craftBlock {
			b = putDirent(b, uint32(target), bigDirName(next), 1, 16)
			next++
		}
		if len(b) == 0 {
			b = putDirent(b, 0, "", 0, craftBlock) // an empty block
		} else {
			// The last entry takes the rest of the block.
			last := len(b) - 16
			if bi == 0 && next == 0 {
				last = 12
			}
			binary.LittleEndian.PutUint16(b[last+4:], uint16(craftBlock-last))
			b = append(b, make([]byte, craftBlock-len(b))...)
		}
		if _, err := img.WriteAt(b, blk*craftBlock); err != nil {
			t.Fatal(err)
		}
	}
	img.Close()
	c.debugfs([]string{"sif /big mode 040755", "sif /big links_count 2"})

	lim := defaultLimits
	lim.maxEntries = 2 * millionEntries_
	lim.statEvery = 997
	svc := testmount.NewService(t)
	r := mountAnd(t, svc, "million-entry directory", c.img, lim, func(dir string, lim walkLimits, abort func()) walkResult {
		w := walkMount(dir, lim, abort)
		// The root lists lost+found, target and big.
		if w.listed != millionEntries_+3 || w.errorCount() > 0 {
			t.Errorf("listed %d names (want %d), errors %s: %q", w.listed, millionEntries_+3, w.errSummary(), w.firstErrs)
		}
		// The last name, which a lookup finds at the very end.
		if _, err := os.Lstat(filepath.Join(dir, "big", bigDirName(millionEntries_-1))); err != nil {
			t.Errorf("the last entry: %v", err)
		}
		return w
	})
	return r
}

// extentsPerBlock is how many extents or index entries an extent block
// of craftBlock bytes holds.
const extentsPerBlock = (craftBlock - 12) / 12

// extentTreeBlocks is how many blocks writeExtentTree needs for n
// extents.
func extentTreeBlocks(n int) int {
	total := 0
	for n > 4 {
		n = (n + extentsPerBlock - 1) / extentsPerBlock
		total += n
	}
	return total
}

// writeExtentTree writes an extent tree of n extents (ext(i) gives the
// i-th, in logical order: first logical block, length, physical block)
// into pool's blocks of img, as deep as it needs, and returns the 60-byte
// root for i_block.
func writeExtentTree(t *testing.T, img *os.File, pool []int64, n int, ext func(i int) (uint32, uint16, int64)) []byte {
	le := binary.LittleEndian
	header := func(buf []byte, entries, maxEntries, depth int) {
		le.PutUint16(buf[0:], 0xF30A)
		le.PutUint16(buf[2:], uint16(entries))
		le.PutUint16(buf[4:], uint16(maxEntries))
		le.PutUint16(buf[6:], uint16(depth))
		le.PutUint32(buf[8:], 0)
	}
	type node struct {
		first uint32
		blk   int64
	}
	if len(pool) < extentTreeBlocks(n) {
		t.Fatalf("%d blocks for an extent tree that needs %d", len(pool), extentTreeBlocks(n))
	}
	buf := make([]byte, craftBlock)
	write := func(blk int64) {
		if _, err := img.WriteAt(buf, blk*craftBlock); err != nil {
			t.Fatal(err)
		}
	}
	// The leaves.
	var level []node
	for first := 0; first < n; first += extentsPerBlock {
		clear(buf)
		cnt := min(extentsPerBlock, n-first)
		header(buf, cnt, extentsPerBlock, 0)
		var lfirst uint32
		for i := 0; i < cnt; i++ {
			lblk, length, phys := ext(first + i)
			if i == 0 {
				lfirst = lblk
			}
			e := buf[12+12*i:]
			le.PutUint32(e[0:], lblk)
			le.PutUint16(e[4:], length)
			le.PutUint16(e[6:], uint16(phys>>32))
			le.PutUint32(e[8:], uint32(phys))
		}
		blk := pool[0]
		pool = pool[1:]
		write(blk)
		level = append(level, node{lfirst, blk})
	}
	index := func(b []byte, nd node) {
		le.PutUint32(b[0:], nd.first)
		le.PutUint32(b[4:], uint32(nd.blk))
		le.PutUint16(b[8:], uint16(nd.blk>>32))
		le.PutUint16(b[10:], 0)
	}
	depth := 1
	for ; len(level) > 4; depth++ {
		var up []node
		for first := 0; first < len(level); first += extentsPerBlock {
			clear(buf)
			cnt := min(extentsPerBlock, len(level)-first)
			header(buf, cnt, extentsPerBlock, depth)
			for i := 0; i < cnt; i++ {
				index(buf[12+12*i:], level[first+i])
			}
			blk := pool[0]
			pool = pool[1:]
			write(blk)
			up = append(up, node{level[first].first, blk})
		}
		level = up
	}
	root := make([]byte, 60)
	header(root, len(level), 4, depth)
	for i, nd := range level {
		index(root[12+12*i:], nd)
	}
	return root
}

// setInode writes fields of the inode of path: i_block (if root is not
// nil), i_size (both halves), and i_mode (if mode is not 0).
func (c *crafted) setInode(path string, root []byte, size uint64, mode uint16) {
	c.t.Helper()
	off, _ := c.inodeOffset(path, craftBlock)
	le := binary.LittleEndian
	if root != nil {
		c.writeAt(root, off+0x28)
	}
	c.writeAt(le.AppendUint32(nil, uint32(size)), off+0x04)
	c.writeAt(le.AppendUint32(nil, uint32(size>>32)), off+0x6C)
	if mode != 0 {
		c.writeAt(le.AppendUint16(nil, mode), off)
	}
}

// millionExtents makes "frag" a file of a million one-block extents
// (4 GiB) in an extent tree of depth 3, alternating between the blocks
// of two files "a" and "b", and reads it whole in the walk, then checks
// blocks spread over the whole file.
func millionExtents(t *testing.T) row {
	const n = 1 << 20 // extents
	c := newCrafted(t)
	pattern := func(c byte) []byte { return bytes.Repeat([]byte{c}, craftBlock) }
	c.file("a", pattern('a'))
	c.file("b", pattern('b'))
	c.file("frag", pattern('f'))
	c.file("pool", randomData(8, extentTreeBlocks(n)*craftBlock))
	c.mkfs(64<<20, "-b", "4096", "-O", "^metadata_csum")
	a, b := c.blocks("/a")[0], c.blocks("/b")[0]
	img, err := os.OpenFile(c.img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	root := writeExtentTree(t, img, c.blocks("/pool"), n, func(i int) (uint32, uint16, int64) {
		if i%2 == 1 {
			return uint32(i), 1, b
		}
		return uint32(i), 1, a
	})
	img.Close()
	c.setInode("/frag", root, n*craftBlock, 0)

	// Read all of it: every extent of the tree.
	lim := defaultLimits
	lim.maxFileBytes = n * craftBlock
	lim.maxBytes = 2 * n * craftBlock
	svc := testmount.NewService(t)
	return mountAnd(t, svc, "million-extent file", c.img, lim, func(dir string, lim walkLimits, abort func()) walkResult {
		w := walkMount(dir, lim, abort)
		if w.errorCount() > 0 {
			t.Errorf("walk: %s: %q", w.errSummary(), w.firstErrs)
		}
		f, err := os.Open(filepath.Join(dir, "frag"))
		if err != nil {
			t.Errorf("frag: %v", err)
			return w
		}
		defer f.Close()
		if st, _ := f.Stat(); st.Size() != n*craftBlock {
			t.Errorf("frag is %d bytes, want %d", st.Size(), n*craftBlock)
		}
		// The first hole is the end: SEEK_HOLE goes through every
		// extent to find it.
		if off, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_HOLE); err != nil || off != n*craftBlock {
			t.Errorf("SEEK_HOLE in frag: %d, %v; want %d", off, err, n*craftBlock)
		}
		got := make([]byte, 2*craftBlock)
		for i := 0; i < 1024; i++ {
			lblk := int64(i)*(n/1024) + int64(i%7)
			if lblk+2 > n {
				lblk = n - 2
			}
			if _, err := f.ReadAt(got, lblk*craftBlock); err != nil {
				t.Errorf("frag at block %d: %v", lblk, err)
				return w
			}
			want := append(pattern('a'), pattern('b')...)
			if lblk%2 == 1 {
				want = append(pattern('b'), pattern('a')...)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("frag at block %d: %q..., want %q...", lblk, got[:8], want[:8])
				return w
			}
		}
		return w
	})
}

// emptyBlocksDir makes "empty" a directory of nearly 4 GiB, the largest
// there is without large_dir, on a filesystem just large enough to hold
// it: its first block holds "." and "..", and
// every one of the other million blocks, each its own extent, is the
// block of a file "z", an empty directory block. Listing it reads a
// million blocks to find nothing, and so does looking a name up.
func emptyBlocksDir(t *testing.T) row {
	const n = 1<<20 - 1 // blocks: the size must fit in 32 bits
	c := newCrafted(t)
	// Not zeros: mke2fs -d would leave a block of zeros a hole.
	c.file("empty", randomData(11, craftBlock))
	c.file("z", randomData(12, craftBlock))
	c.file("pool", randomData(10, extentTreeBlocks(n)*craftBlock))
	// A directory cannot be larger than its filesystem: this one has
	// room for it (the image is sparse).
	c.mkfs(n*craftBlock+64<<20, "-b", "4096", "-O", "^metadata_csum", "-N", "4096")
	first, z := c.blocks("/empty")[0], c.blocks("/z")[0]
	_, ino := c.inodeOffset("/empty", craftBlock)
	var b []byte
	b = putDirent(b, uint32(ino), ".", 2, 12)
	b = putDirent(b, 2, "..", 2, craftBlock-12)
	c.writeAt(b, first*craftBlock)
	c.writeAt(putDirent(nil, 0, "", 0, craftBlock), z*craftBlock)
	img, err := os.OpenFile(c.img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	root := writeExtentTree(t, img, c.blocks("/pool"), n, func(i int) (uint32, uint16, int64) {
		if i == 0 {
			return 0, 1, first
		}
		return uint32(i), 1, z
	})
	img.Close()
	c.setInode("/empty", root, n*craftBlock, 0o40755)
	c.debugfs([]string{"sif /empty links_count 2"})
	svc := testmount.NewService(t)
	return mountAnd(t, svc, "million empty directory blocks", c.img, defaultLimits, func(dir string, lim walkLimits, abort func()) walkResult {
		w := walkMount(dir, lim, abort)
		if w.errorCount() > 0 {
			t.Errorf("walk: %s: %q", w.errSummary(), w.firstErrs)
		}
		if _, err := os.Lstat(filepath.Join(dir, "empty", "nothing")); !errors.Is(err, unix.ENOENT) {
			t.Errorf("looking up a name in the empty directory: %v, want ENOENT", err)
		}
		return w
	})
}

// hugeDir makes "huge" a large_dir directory that claims 16 TiB: 2^32
// blocks in 131,072 extents of 32,768 blocks each, all on the same
// device blocks. Reading them all would take hours; a directory cannot be
// larger than its filesystem, so listing it and looking names up in it
// must fail at once, with the inode named in the log.
func hugeDir(t *testing.T) row {
	const n = 1 << 17 // extents
	const extLen = 1 << 15
	c := newCrafted(t)
	c.file("huge", randomData(13, craftBlock))
	c.file("pool", randomData(14, extentTreeBlocks(n)*craftBlock))
	c.mkfs(256<<20, "-b", "4096", "-O", "^metadata_csum,large_dir")
	img, err := os.OpenFile(c.img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	root := writeExtentTree(t, img, c.blocks("/pool"), n, func(i int) (uint32, uint16, int64) {
		return uint32(i * extLen), extLen, 1000
	})
	img.Close()
	c.setInode("/huge", root, uint64(n)*extLen*craftBlock, 0o40755)
	c.debugfs([]string{"sif /huge links_count 2"})
	svc := testmount.NewService(t)
	return mountAnd(t, svc, "directory larger than its filesystem", c.img, defaultLimits, func(dir string, lim walkLimits, abort func()) walkResult {
		w := walkMount(dir, lim, abort)
		if w.errs[unix.EUCLEAN] == 0 || w.errorCount() != w.errs[unix.EUCLEAN] {
			t.Errorf("walk: %s (%q), want EUCLEAN reading the huge directory", w.errSummary(), w.firstErrs)
		}
		if _, err := os.Lstat(filepath.Join(dir, "huge", "nothing")); !errors.Is(err, unix.EUCLEAN) {
			t.Errorf("looking up a name in the huge directory: %v, want EUCLEAN", err)
		}
		return w
	})
}

// aliasedBlockMap makes "huge" an ext2 file of 4 TiB whose every block
// is the same device block: its direct pointers, and its indirect trees,
// whose every pointer block is one block of 1,024 pointers to the next
// level (for the triple-indirect tree, 1,024 pointers to one block of
// 1,024 pointers to one block of 1,024 pointers to the data block). Every
// block is data, none contiguous with the next, so finding its first hole
// (at the end) means a billion mapping steps; the server may answer with
// the end of the file sooner (lseek lets any file be all data) but must
// answer.
func aliasedBlockMap(t *testing.T) row {
	c := newCrafted(t)
	c.file("meta", randomData(15, 4*craftBlock))
	c.file("huge", nil)
	c.mkfs(64<<20, "-t", "ext2", "-b", "4096")
	meta := c.blocks("/meta")
	tind, dind, ind, data := meta[0], meta[1], meta[2], meta[3]
	le := binary.LittleEndian
	fill := func(blk, ptr int64) {
		var b []byte
		for range craftBlock / 4 {
			b = le.AppendUint32(b, uint32(ptr))
		}
		c.writeAt(b, blk*craftBlock)
	}
	fill(tind, dind)
	fill(dind, ind)
	fill(ind, data)
	const apb = craftBlock / 4
	root := make([]byte, 60)
	for i := 0; i < 12; i++ {
		le.PutUint32(root[4*i:], uint32(data))
	}
	le.PutUint32(root[4*12:], uint32(ind))
	le.PutUint32(root[4*13:], uint32(dind))
	le.PutUint32(root[4*14:], uint32(tind))
	c.setInode("/huge", root, (12+apb+apb*apb+apb*apb*apb)*craftBlock, 0)
	svc := testmount.NewService(t)
	return mountAnd(t, svc, "4 TiB of one aliased block", c.img, defaultLimits, func(dir string, lim walkLimits, abort func()) walkResult {
		w := walkMount(dir, lim, abort)
		if w.errorCount() > 0 {
			t.Errorf("walk: %s: %q", w.errSummary(), w.firstErrs)
		}
		return w
	})
}

const chainDepth = 4000

// deepChain makes a chain of directories d/d/d/... 4,000 deep (paths far
// beyond PATH_MAX), whose deepest directory holds "loop", a second name
// of the top of the chain, and walks it to the bottom.
func deepChain(t *testing.T) row {
	c := newCrafted(t)
	c.file("top-file", []byte("at the top\n"))
	c.mkfs(64<<20, "-b", "4096", "-O", "^metadata_csum", "-N", "8192")
	cmds := make([]string, 0, 2*chainDepth+1)
	for range chainDepth {
		cmds = append(cmds, "mkdir d", "cd d")
	}
	cmds = append(cmds, "ln /d loop")
	c.debugfs(cmds)
	lim := defaultLimits
	lim.maxDepth = chainDepth + 10
	svc := testmount.NewService(t)
	return mountAnd(t, svc, "deep directory chain", c.img, lim, func(dir string, lim walkLimits, abort func()) walkResult {
		w := walkMount(dir, lim, abort)
		// lost+found, top-file, chainDepth d's and the loop.
		if w.entries != chainDepth+3 || w.cut > 0 {
			t.Errorf("visited %d entries (%d cut short), want %d", w.entries, w.cut, chainDepth+3)
		}
		// The loop is a directory the kernel already knows elsewhere:
		// it may refuse to show it there (ELOOP), nothing else.
		for e := range w.errs {
			if e != unix.ELOOP {
				t.Errorf("walk: %s: %q", w.errSummary(), w.firstErrs)
				break
			}
		}
		return w
	})
}

const sharers = 5000

// sharedXattrBlock gives 5,000 files the xattr block of one file ("x",
// whose 1,000-byte user.shared does not fit in its inode), and reads
// every file's xattrs.
func sharedXattrBlock(t *testing.T) row {
	c := newCrafted(t)
	value := randomData(9, 1000)
	c.file("x", nil)
	if err := unix.Setxattr(filepath.Join(c.src, "x"), "user.shared", value, 0); err != nil {
		t.Skipf("the source tree's filesystem takes no user xattrs: %v", err)
	}
	for i := 0; i < sharers; i++ {
		c.file(fmt.Sprintf("s/%04d", i), nil)
	}
	c.mkfs(64<<20, "-b", "4096", "-O", "^metadata_csum", "-N", "8192")
	blk := testimg.DebugfsStat(t, c.img, "/x")["File ACL"]
	if blk == "" || blk == "0" {
		t.Fatalf("x has no xattr block (File ACL %q)", blk)
	}
	cmds := make([]string, 0, sharers)
	for i := 0; i < sharers; i++ {
		cmds = append(cmds, fmt.Sprintf("sif /s/%04d file_acl %s", i, blk))
	}
	c.debugfs(cmds)
	// h_refcount, as the kernel would keep it.
	var b int64
	fmt.Sscan(blk, &b)
	ref := make([]byte, 4)
	binary.LittleEndian.PutUint32(ref, sharers+1)
	c.writeAt(ref, b*craftBlock+4)

	svc := testmount.NewService(t)
	return mountAnd(t, svc, "shared xattr block", c.img, defaultLimits, func(dir string, lim walkLimits, abort func()) walkResult {
		w := walkMount(dir, lim, abort)
		if w.errorCount() > 0 {
			t.Errorf("walk: %s: %q", w.errSummary(), w.firstErrs)
		}
		buf := make([]byte, 4096)
		for i := 0; i < sharers; i += 7 {
			p := filepath.Join(dir, "s", fmt.Sprintf("%04d", i))
			n, err := unix.Lgetxattr(p, "user.shared", buf)
			if err != nil || !bytes.Equal(buf[:n], value) {
				t.Errorf("%s: user.shared: %v, %d bytes", p, err, n)
				break
			}
		}
		return w
	})
}
