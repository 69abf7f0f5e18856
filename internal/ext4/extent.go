package ext4

import (
	"encoding/binary"
	"sort"
)

const (
	extentMagic    = 0xF30A
	extentHdrSize  = 12
	extentSize     = 12
	maxExtentDepth = 5 // EXT4_MAX_EXTENT_DEPTH
	initMaxLen     = 32768
	maxLogical     = 1 << 32 // extents address 32-bit logical blocks
)

// extentHeader is ext4_extent_header.
type extentHeader struct {
	entries, max, depth uint16
}

// checkExtentHeader validates a node's header as __ext4_ext_check does.
// b is the node: 60 bytes of i_block for the root, a whole block otherwise.
func checkExtentHeader(in *Inode, b []byte, wantDepth int, pblk uint64) (extentHeader, error) {
	le := binary.LittleEndian
	h := extentHeader{entries: le.Uint16(b[2:]), max: le.Uint16(b[4:]), depth: le.Uint16(b[6:])}
	bad := func(what string, args ...any) (extentHeader, error) {
		return h, corruptf(BadExtentTree, in.Ino, pblk, what, args...)
	}
	if le.Uint16(b[0:]) != extentMagic {
		return bad("bad magic 0x%04x", le.Uint16(b[0:]))
	}
	if wantDepth >= 0 && int(h.depth) != wantDepth {
		return bad("node depth %d, expected %d", h.depth, wantDepth)
	}
	if h.depth > maxExtentDepth {
		return bad("depth %d exceeds the maximum of %d", h.depth, maxExtentDepth)
	}
	if h.max == 0 || int(h.max) > (len(b)-extentHdrSize)/extentSize {
		return bad("invalid eh_max %d", h.max)
	}
	if h.entries > h.max {
		return bad("eh_entries %d exceeds eh_max %d", h.entries, h.max)
	}
	if h.entries == 0 && h.depth > 0 {
		return bad("empty index node at depth %d", h.depth)
	}
	return h, nil
}

// verifyExtentNode checks what needs a pass over the whole node: the
// checksum of a non-root node, and that entries are in strictly increasing
// order (so that binary search is sound). The result is cached per block.
func (fs *FS) verifyExtentNode(in *Inode, b []byte, h extentHeader, pblk uint64) error {
	le := binary.LittleEndian
	if pblk != 0 && fs.sb.HasMetadataCsum() {
		tail := extentHdrSize + extentSize*int(h.max)
		if tail+4 > len(b) {
			return corruptf(BadExtentTree, in.Ino, pblk, "no room for the checksum tail")
		}
		seed := crc32cU32(crc32cU32(fs.csumSeed, in.Ino), in.Generation)
		if got, want := crc32c(seed, b[:tail]), le.Uint32(b[tail:]); got != want {
			return corruptf(BadChecksum, in.Ino, pblk, "extent block checksum mismatch (stored 0x%08x, computed 0x%08x)", want, got)
		}
	}
	prev := int64(-1)
	for i := 0; i < int(h.entries); i++ {
		start := int64(le.Uint32(b[extentHdrSize+i*extentSize:]))
		if start <= prev {
			return corruptf(BadExtentTree, in.Ino, pblk, "entries out of order at index %d", i)
		}
		prev = start
	}
	return nil
}

// extentMapBlock finds where logical block lblk lives in an extent-mapped
// inode. It returns the extent containing lblk, or a hole reaching to the
// next mapped block (or to the end of the address space).
func (fs *FS) extentMapBlock(in *Inode, lblk uint64) (Extent, error) {
	le := binary.LittleEndian
	if lblk >= maxLogical {
		return Extent{Logical: lblk, Len: 1<<63 - lblk, Kind: Hole}, nil
	}
	node := in.Block[:]
	var pblk uint64
	depth := -1
	// upper is the first logical block not covered by the subtree being
	// searched: the start of the next index entry at some level above.
	upper := uint64(maxLogical)
	for level := 0; level <= maxExtentDepth+1; level++ {
		h, err := checkExtentHeader(in, node, depth, pblk)
		if err != nil {
			return Extent{}, err
		}
		if level == 0 {
			depth = int(h.depth)
			if err := fs.verifyExtentNode(in, node, h, 0); err != nil {
				return Extent{}, err
			}
		}
		n := int(h.entries)
		start := func(i int) uint64 { return uint64(le.Uint32(node[extentHdrSize+i*extentSize:])) }
		// The last entry starting at or before lblk, or -1.
		idx := sort.Search(n, func(i int) bool { return start(i) > lblk }) - 1
		next := upper
		if idx+1 < n {
			next = min(start(idx+1), upper)
		}
		if h.depth == 0 {
			return fs.leafLookup(in, node, idx, lblk, next, pblk)
		}
		if idx < 0 {
			// Before the first index: a hole up to where it starts.
			return Extent{Logical: lblk, Len: next - lblk, Kind: Hole}, nil
		}
		e := node[extentHdrSize+idx*extentSize:]
		upper = next
		child := uint64(le.Uint32(e[4:])) | uint64(le.Uint16(e[8:]))<<32
		if !fs.validBlock(child) {
			return Extent{}, corruptf(BadExtentTree, in.Ino, pblk, "index points at block %d, outside the filesystem", child)
		}
		b, err := fs.cachedBlock(child, in.Ino)
		if err != nil {
			return Extent{}, err
		}
		depth = int(h.depth) - 1
		node, pblk = b.data, child
		if b.verifiedFor.Load() != in.Ino {
			ch, err := checkExtentHeader(in, node, depth, pblk)
			if err != nil {
				return Extent{}, err
			}
			if err := fs.verifyExtentNode(in, node, ch, pblk); err != nil {
				return Extent{}, err
			}
			b.verifiedFor.Store(in.Ino)
		}
	}
	return Extent{}, corruptf(BadExtentTree, in.Ino, pblk, "tree deeper than %d levels", maxExtentDepth)
}

// leafLookup resolves lblk within a leaf whose entry idx is the last one
// starting at or before lblk (-1 if none); next is where the following
// extent (or the subtree) begins.
func (fs *FS) leafLookup(in *Inode, node []byte, idx int, lblk, next, pblk uint64) (Extent, error) {
	le := binary.LittleEndian
	if idx < 0 {
		return Extent{Logical: lblk, Len: next - lblk, Kind: Hole}, nil
	}
	e := node[extentHdrSize+idx*extentSize:]
	start := uint64(le.Uint32(e[0:]))
	length := uint64(le.Uint16(e[4:]))
	kind := Mapped
	if length > initMaxLen {
		length -= initMaxLen
		kind = Unwritten
	}
	phys := uint64(le.Uint32(e[8:])) | uint64(le.Uint16(e[6:]))<<32
	if length == 0 || start+length > next || !fs.validRange(phys, length) {
		return Extent{}, corruptf(BadExtentTree, in.Ino, pblk,
			"extent %d+%d -> %d is empty, overlaps the next extent or lies outside the filesystem", start, length, phys)
	}
	if lblk < start+length {
		off := lblk - start
		return Extent{Logical: lblk, Physical: phys + off, Len: length - off, Kind: kind}, nil
	}
	return Extent{Logical: lblk, Len: next - lblk, Kind: Hole}, nil
}
