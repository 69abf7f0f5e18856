package iomap_test

import (
	"safefs/internal/iomap/abi"

	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"safefs/internal/ext4"
	"safefs/internal/iomap"
)

// patchInode returns a copy of base b with file name's inode changed by
// edit (raw on-disk bytes; the bases have no checksums), and its number.
func patchInode(t *testing.T, b fuzzBase, name string, edit func(raw []byte)) ([]byte, uint32) {
	t.Helper()
	fsys, _, err := openBytes(b.img)
	if err != nil {
		t.Fatal(err)
	}
	in := resolve(t, fsys, name)
	off, n, ok := inodeRegion(fsys, in.Ino)
	if !ok {
		t.Fatalf("%s: no inode region", name)
	}
	img := bytes.Clone(b.img)
	edit(img[off : off+n])
	return img, in.Ino
}

func baseNamed(t *testing.T, name string) fuzzBase {
	for _, b := range fuzzImages(t) {
		if b.name == name {
			return b
		}
	}
	t.Fatalf("no fuzz base %q", name)
	return fuzzBase{}
}

// TestHostileMappings feeds the engine extents and block pointers that
// reach outside the filesystem or overflow, and requires an
// *ext4.CorruptError from Map, ReadAt and Seek, never a mapping or a
// panic.
func TestHostileMappings(t *testing.T) {
	le := binary.LittleEndian
	const iBlock = 0x28 // i_block in the on-disk inode
	blocks := func(b fuzzBase) uint32 {
		fsys, _, err := openBytes(b.img)
		if err != nil {
			t.Fatal(err)
		}
		return uint32(fsys.Superblock().BlocksCount)
	}
	ext, bm := baseNamed(t, "extents"), baseNamed(t, "blockmap")
	// "small" has one extent in its root: entry 0 at i_block+12 is
	// ee_block u32, ee_len u16, ee_start_hi u16, ee_start_lo u32.
	extent := func(raw []byte) []byte { return raw[iBlock+12:] }
	cases := []struct {
		name string
		base fuzzBase
		file string
		pos  uint64
		edit func(raw []byte)
	}{
		{"extent at a 48-bit block", ext, "small", 0, func(r []byte) { le.PutUint16(extent(r)[6:], 0xFFFF) }},
		{"extent past the last block", ext, "small", 0, func(r []byte) {
			le.PutUint32(extent(r)[8:], blocks(ext)-1)
			le.PutUint16(extent(r)[4:], 2)
		}},
		{"empty extent", ext, "small", 0, func(r []byte) { le.PutUint16(extent(r)[4:], 0) }},
		{"unwritten extent past the end", ext, "small", 0, func(r []byte) {
			le.PutUint32(extent(r)[8:], blocks(ext)-3)
			le.PutUint16(extent(r)[4:], 32768+5)
		}},
		{"direct pointer past the end", bm, "frag", 0, func(r []byte) { le.PutUint32(r[iBlock:], 0xFFFFFFFF) }},
		{"run crossing the end", bm, "small", 0, func(r []byte) {
			le.PutUint32(r[iBlock:], blocks(bm)-1)
			le.PutUint32(r[iBlock+4:], blocks(bm))
		}},
		{"triple indirect past the end", bm, "deep", 70 << 20, func(r []byte) { le.PutUint32(r[iBlock+14*4:], 0xFFFFFFF0) }},
	}
	for _, c := range cases {
		img, ino := patchInode(t, c.base, c.file, c.edit)
		fsys, e, err := openBytes(img)
		if err != nil {
			t.Fatal(err)
		}
		in, err := fsys.Inode(ino)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var ce *ext4.CorruptError
		m, err := e.Map(in, c.pos, 1<<20)
		if !errors.As(err, &ce) {
			t.Errorf("%s: Map = %v, %v; want a CorruptError", c.name, m, err)
		}
		if _, err := e.ReadAt(in, make([]byte, 4096), int64(c.pos)); !errors.As(err, &ce) {
			t.Errorf("%s: ReadAt: %v", c.name, err)
		}
		if c.pos == 0 {
			if _, err := e.Seek(in, 0, iomap.SeekHole); !errors.As(err, &ce) {
				t.Errorf("%s: Seek: %v", c.name, err)
			}
		}
	}
}

// TestHugeFile gives a one-block file a size of 2^62: mappings must stay
// block aligned, bounded and free of overflow all the way to the end.
func TestHugeFile(t *testing.T) {
	le := binary.LittleEndian
	const size = 1 << 62
	img, ino := patchInode(t, baseNamed(t, "extents"), "small", func(r []byte) {
		le.PutUint32(r[0x04:], 0) // size mod 2^32
		le.PutUint32(r[0x6C:], uint32(size>>32))
	})
	fsys, e, err := openBytes(img)
	if err != nil {
		t.Fatal(err)
	}
	in, err := fsys.Inode(ino)
	if err != nil || in.Size != size {
		t.Fatalf("inode: %v, size %d", err, in.Size)
	}
	bs := uint64(e.BlockSize())
	segs, err := engineWalk(e, in)
	if err != nil {
		t.Fatal(err)
	}
	want := []seg{{0, bs, abi.TypeMapped, segs[0].addr}, {bs, size, abi.TypeHole, abi.NullAddr}}
	if err := diffSegs(segs, want); err != nil {
		t.Error(err)
	}
	for _, pos := range []uint64{size - 1, size, size + 1, abi.MaxLFSFileSize} {
		m, err := e.Map(in, pos, ^uint64(0))
		if err != nil {
			t.Fatalf("Map(%d): %v", pos, err)
		}
		if err := checkMapping(e.BlockSize(), m, pos, ^uint64(0)); err != nil || m.Type != abi.TypeHole {
			t.Errorf("Map(%d) = %v: %v", pos, m, err)
		}
	}
	if got, err := e.Seek(in, 0, iomap.SeekHole); got != bs || err != nil {
		t.Errorf("SEEK_HOLE from 0: %d, %v", got, err)
	}
	if got, err := e.Seek(in, bs, iomap.SeekData); !errors.Is(err, iomap.ErrNoData) {
		t.Errorf("SEEK_DATA from %d: %d, %v", bs, got, err)
	}
	if got, err := e.Seek(in, size-10, iomap.SeekHole); got != size-10 || err != nil {
		t.Errorf("SEEK_HOLE near the end: %d, %v", got, err)
	}
	buf := bytes.Repeat([]byte{1}, 100)
	if n, err := e.ReadAt(in, buf, size-50); n != 50 || err == nil || !bytes.Equal(buf[:50], make([]byte, 50)) {
		t.Errorf("ReadAt at the end: %d, %v", n, err)
	}
}

// TestMergeBound builds the worst case for merging: a triple-indirect tree
// whose 256 entries all name one double-indirect block whose entries all
// name one all-zero block, so that 16 GiB of holes come as 65,536 separate
// 256-block runs. Map must stop merging after its bound (a mapping the
// kernel accepts, and asks again after), and a SEEK_DATA across all of it
// must still finish, quickly, with ENXIO.
func TestMergeBound(t *testing.T) {
	le := binary.LittleEndian
	b := baseNamed(t, "blockmap")
	fsys, _, err := openBytes(b.img)
	if err != nil {
		t.Fatal(err)
	}
	bs := uint64(fsys.BlockSize())
	apb := bs / 4
	zero := uint32(fsys.Superblock().BlocksCount - 1) // unused, all zeros
	dind := zero - 1
	img, ino := patchInode(t, b, "deep", func(raw []byte) {
		le.PutUint32(raw[0x04:], 0) // i_size 20 GiB
		le.PutUint32(raw[0x6C:], 5)
	})
	off, _, _ := inodeRegion(fsys, ino)
	tind := uint64(le.Uint32(img[off+0x28+14*4:])) // i_block[14]
	for _, blk := range []uint64{uint64(zero), uint64(dind)} {
		if !bytes.Equal(img[blk*bs:(blk+1)*bs], make([]byte, bs)) {
			t.Fatalf("block %d is not free and zero", blk)
		}
	}
	for i := uint64(0); i < apb; i++ {
		le.PutUint32(img[tind*bs+4*i:], dind)
		le.PutUint32(img[uint64(dind)*bs+4*i:], zero)
	}
	fsys, e, err := openBytes(img)
	if err != nil {
		t.Fatal(err)
	}
	in, err := fsys.Inode(ino)
	if err != nil {
		t.Fatal(err)
	}
	start := (12 + apb + apb*apb) * bs // first byte mapped by the triple-indirect tree
	m, err := e.Map(in, start, ^uint64(0))
	if err != nil {
		t.Fatal(err)
	}
	if err := checkMapping(e.BlockSize(), m, start, ^uint64(0)); err != nil || m.Type != abi.TypeHole {
		t.Fatalf("Map = %v: %v", m, err)
	}
	if m.Length != 1024*apb*bs {
		t.Errorf("Map merged %d bytes, want 1024 runs of %d blocks", m.Length, apb)
	}
	if _, err := e.Seek(in, start, iomap.SeekData); !errors.Is(err, iomap.ErrNoData) {
		t.Errorf("SEEK_DATA over the holes: %v", err)
	}
	if got, err := e.Seek(in, start, iomap.SeekHole); got != start || err != nil {
		t.Errorf("SEEK_HOLE: %d, %v", got, err)
	}
}
