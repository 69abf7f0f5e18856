package ext4

import "encoding/binary"

// Indirect block maps (ext2/ext3, and ext4 inodes without the extents
// flag): i_block[0..11] map the first twelve blocks directly, i_block[12]
// points to a block of pointers, [13] to a block of pointers to such blocks,
// [14] one level deeper still. A zero pointer is a hole.
const (
	directBlocks = 12
	indBlock     = 12
	dindBlock    = 13
	tindBlock    = 14
)

// blockMapBlock finds where logical block lblk lives in a block-mapped
// inode, returning a run of physically contiguous blocks (or of holes) that
// ends within the same pointer block, so one call serves a large read.
func (fs *FS) blockMapBlock(in *Inode, lblk uint64) (Extent, error) {
	le := binary.LittleEndian
	apb := uint64(fs.blockSize / 4) // addresses per block
	root := make([]uint32, 15)
	for i := range root {
		root[i] = le.Uint32(in.Block[4*i:])
	}
	if lblk < directBlocks {
		return fs.runIn(in, func(i uint64) uint32 { return root[i] }, lblk, directBlocks, 0)
	}
	// Work out which tree holds lblk and the path of indices through it.
	rel := lblk - directBlocks
	var top uint32
	var levels int
	switch {
	case rel < apb:
		top, levels = root[indBlock], 1
	case rel-apb < apb*apb:
		rel -= apb
		top, levels = root[dindBlock], 2
	case rel-apb-apb*apb < apb*apb*apb:
		rel -= apb + apb*apb
		top, levels = root[tindBlock], 3
	default:
		return Extent{Logical: lblk, Len: 1<<63 - lblk, Kind: Hole}, nil
	}
	// span is how many logical blocks one pointer at the current level
	// covers; a zero pointer is a hole of that many blocks (clipped to
	// where lblk sits within it).
	span := uint64(1)
	for i := 1; i < levels; i++ {
		span *= apb
	}
	ptr := top
	for level := levels; level >= 1; level-- {
		if ptr == 0 {
			// Hole covering the rest of this subtree.
			covered := span * apb
			return Extent{Logical: lblk, Len: covered - rel%covered, Kind: Hole}, nil
		}
		if !fs.validBlock(uint64(ptr)) {
			return Extent{}, corruptf(BadBlockMap, in.Ino, uint64(ptr), "indirect block %d is outside the filesystem", ptr)
		}
		b, err := fs.readBlock(uint64(ptr), in.Ino)
		if err != nil {
			return Extent{}, err
		}
		idx := rel / span
		rel %= span
		if level == 1 {
			return fs.runIn(in, func(i uint64) uint32 { return le.Uint32(b[4*i:]) }, idx, apb, lblk-idx)
		}
		ptr = le.Uint32(b[4*idx:])
		span /= apb
	}
	panic("unreachable")
}

// runIn returns the run starting at index idx of a pointer array of n
// entries, whose entry 0 maps logical block base.
func (fs *FS) runIn(in *Inode, at func(uint64) uint32, idx, n, base uint64) (Extent, error) {
	first := at(idx)
	lblk := base + idx
	j := idx + 1
	if first == 0 {
		for j < n && at(j) == 0 {
			j++
		}
		return Extent{Logical: lblk, Len: j - idx, Kind: Hole}, nil
	}
	for j < n && at(j) == first+uint32(j-idx) {
		j++
	}
	if !fs.validRange(uint64(first), j-idx) {
		return Extent{}, corruptf(BadBlockMap, in.Ino, uint64(first), "data block %d is outside the filesystem", first)
	}
	return Extent{Logical: lblk, Physical: uint64(first), Len: j - idx, Kind: Mapped}, nil
}
