package hostile

import (
	"bytes"
	"encoding/binary"
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

// millionExtents makes "frag" a file of a million one-block extents
// (4 GiB) in an extent tree of depth 3, alternating between the blocks
// of two files "a" and "b", and reads it whole in the walk, then checks
// blocks spread over the whole file.
func millionExtents(t *testing.T) row {
	const n = 1 << 20 // extents
	const perBlock = (craftBlock - 12) / 12
	leaves := (n + perBlock - 1) / perBlock
	index1 := (leaves + perBlock - 1) / perBlock
	if index1 > perBlock {
		t.Fatalf("%d index blocks do not fit under one", index1)
	}
	c := newCrafted(t)
	pattern := func(c byte) []byte { return bytes.Repeat([]byte{c}, craftBlock) }
	c.file("a", pattern('a'))
	c.file("b", pattern('b'))
	c.file("frag", pattern('f'))
	c.file("pool", randomData(8, (leaves+index1+1)*craftBlock))
	c.mkfs(64<<20, "-b", "4096", "-O", "^metadata_csum")
	a, b := c.blocks("/a")[0], c.blocks("/b")[0]
	pool := c.blocks("/pool")
	img, err := os.OpenFile(c.img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	header := func(buf []byte, entries, maxEntries, depth int) {
		le.PutUint16(buf[0:], 0xF30A)
		le.PutUint16(buf[2:], uint16(entries))
		le.PutUint16(buf[4:], uint16(maxEntries))
		le.PutUint16(buf[6:], uint16(depth))
		le.PutUint32(buf[8:], 0)
	}
	index := func(buf []byte, first uint32, child int64) {
		le.PutUint32(buf[0:], first)
		le.PutUint32(buf[4:], uint32(child))
		le.PutUint16(buf[8:], uint16(child>>32))
		le.PutUint16(buf[10:], 0)
	}
	write := func(buf []byte, blk int64) {
		if _, err := img.WriteAt(buf, blk*craftBlock); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, craftBlock)
	// Leaves: pool[0:leaves].
	for l := 0; l < leaves; l++ {
		clear(buf)
		first := l * perBlock
		cnt := min(perBlock, n-first)
		header(buf, cnt, perBlock, 0)
		for i := 0; i < cnt; i++ {
			e := buf[12+12*i:]
			lblk := first + i
			phys := a
			if lblk%2 == 1 {
				phys = b
			}
			le.PutUint32(e[0:], uint32(lblk))
			le.PutUint16(e[4:], 1)
			le.PutUint16(e[6:], uint16(phys>>32))
			le.PutUint32(e[8:], uint32(phys))
		}
		write(buf, pool[l])
	}
	// Depth-1 index blocks: pool[leaves:leaves+index1].
	for x := 0; x < index1; x++ {
		clear(buf)
		first := x * perBlock
		cnt := min(perBlock, leaves-first)
		header(buf, cnt, perBlock, 1)
		for i := 0; i < cnt; i++ {
			index(buf[12+12*i:], uint32((first+i)*perBlock), pool[first+i])
		}
		write(buf, pool[leaves+x])
	}
	// The depth-2 block: pool[leaves+index1].
	top := pool[leaves+index1]
	clear(buf)
	header(buf, index1, perBlock, 2)
	for x := 0; x < index1; x++ {
		index(buf[12+12*x:], uint32(x*perBlock*perBlock), pool[leaves+x])
	}
	write(buf, top)
	// The root in frag's i_block, and its size.
	off, _ := c.inodeOffset("/frag", craftBlock)
	root := make([]byte, 60)
	header(root, 1, 4, 3)
	index(root[12:], 0, top)
	if _, err := img.WriteAt(root, off+0x28); err != nil {
		t.Fatal(err)
	}
	fileSize := uint64(n) * craftBlock
	size := make([]byte, 4)
	le.PutUint32(size, uint32(fileSize))
	img.WriteAt(size, off+0x04)
	le.PutUint32(size, uint32(fileSize>>32))
	img.WriteAt(size, off+0x6C)
	img.Close()

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
