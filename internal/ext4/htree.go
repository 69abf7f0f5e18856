package ext4

import (
	"encoding/binary"
	"errors"
)

// errBadDx marks a damaged hash index; Lookup then falls back to a linear
// scan, as the kernel does for ERR_BAD_DX_DIR. It wraps a *CorruptError.
var errBadDx = errors.New("ext4: damaged htree index")

type dxError struct{ *CorruptError }

func (e dxError) Unwrap() []error { return []error{e.CorruptError, errBadDx} }

func badDx(ino uint32, format string, args ...any) error {
	return dxError{corruptf(BadHtree, ino, 0, format, args...)}
}

const (
	dxRootInfoOff  = 24 // after the "." and ".." entries
	dxRootInfoLen  = 8
	dxNodeEntryOff = 8 // after the empty dirent spanning the block
	dxTailSize     = 8
	dxEntrySize    = 8
	htreeLevels    = 2 // EXT4_HTREE_LEVEL_COMPAT
	htreeLevelsBig = 3 // EXT4_HTREE_LEVEL, with large_dir
)

// dxFrame is one level of a path down the index: the entries of one index
// block and the position chosen in it.
type dxFrame struct {
	entries []byte // count/limit header followed by the entries
	at      int    // index of the chosen entry
}

func dxCount(e []byte) int { return int(binary.LittleEndian.Uint16(e[2:])) }
func dxLimit(e []byte) int { return int(binary.LittleEndian.Uint16(e[0:])) }
func dxHash(e []byte, i int) uint32 {
	return binary.LittleEndian.Uint32(e[i*dxEntrySize:])
}
func dxBlock(e []byte, i int) uint64 {
	return uint64(binary.LittleEndian.Uint32(e[i*dxEntrySize+4:]) & 0x0FFFFFFF)
}

// dxIndexBlock reads an interior index block at logical block lblk and
// checks that it is one (ext4_read_dirblock with INDEX).
func (fs *FS) dxIndexBlock(dir *Inode, lblk uint64) ([]byte, error) {
	b, _, err := fs.dirBlock(dir, lblk)
	if err != nil {
		return nil, err
	}
	if b == nil {
		return nil, corruptf(BadHtree, dir.Ino, 0, "hole at htree index block %d", lblk)
	}
	if !fs.isDxInternal(dir, lblk, b) {
		return nil, corruptf(BadHtree, dir.Ino, 0, "leaf block %d found where an index block belongs", lblk)
	}
	if err := fs.dxCsumVerify(dir, b, lblk); err != nil {
		return nil, err
	}
	return b, nil
}

// dxCsumVerify checks the dx_tail of an index block (ext4_dx_csum_verify).
func (fs *FS) dxCsumVerify(dir *Inode, b []byte, lblk uint64) error {
	if !fs.sb.HasMetadataCsum() {
		return nil
	}
	le := binary.LittleEndian
	bs := len(b)
	var countOff int
	switch rl := recLenFromDisk(le.Uint16(b[4:]), bs); {
	case rl == bs:
		countOff = dxNodeEntryOff
	case rl == 12:
		if recLenFromDisk(le.Uint16(b[12+4:]), bs) != bs-12 || le.Uint32(b[dxRootInfoOff:]) != 0 || b[dxRootInfoOff+5] != dxRootInfoLen {
			return badDx(dir.Ino, "index block %d has no count/limit header", lblk)
		}
		countOff = dxRootInfoOff + dxRootInfoLen
	default:
		return badDx(dir.Ino, "index block %d has no count/limit header", lblk)
	}
	c := b[countOff:]
	limit, count := dxLimit(c), dxCount(c)
	if countOff+limit*dxEntrySize > bs-dxTailSize || count > limit {
		return badDx(dir.Ino, "index block %d has no room for its checksum", lblk)
	}
	t := b[countOff+limit*dxEntrySize:]
	seed := crc32cU32(crc32cU32(fs.csumSeed, dir.Ino), dir.Generation)
	sum := crc32c(seed, b[:countOff+count*dxEntrySize])
	sum = crc32c(sum, t[:4])
	sum = crc32c(sum, zero4[:])
	if want := le.Uint32(t[4:]); sum != want {
		return corruptf(BadChecksum, dir.Ino, 0, "htree index block %d failed its checksum", lblk)
	}
	return nil
}

// dxProbe walks from the root to the leaf whose hash range holds hash,
// returning the path (ext4's dx_probe).
func (fs *FS) dxProbe(dir *Inode, name []byte) ([]dxFrame, uint32, error) {
	root, err := fs.dxIndexBlock(dir, 0)
	if err != nil {
		return nil, 0, err
	}
	bs := int(fs.blockSize)
	info := root[dxRootInfoOff:]
	version, infoLen, indirect := info[4], int(info[5]), int(info[6])
	if version > hashTea {
		return nil, 0, badDx(dir.Ino, "unrecognised hash version %d", version)
	}
	if info[7]&1 != 0 {
		return nil, 0, badDx(dir.Ino, "unimplemented hash flags 0x%x", info[7])
	}
	if fs.hashUnsigned {
		version += 3
	}
	hash, _, err := dirHash(name, version, fs.sb.HashSeed)
	if err != nil {
		return nil, 0, badDx(dir.Ino, "%v", err)
	}
	maxLevels := htreeLevels
	if fs.sb.HasIncompat(IncompatLargedir) {
		maxLevels = htreeLevelsBig
	}
	if indirect >= maxLevels {
		return nil, 0, badDx(dir.Ino, "htree depth %d exceeds what this filesystem supports", indirect+1)
	}
	tail := 0
	if fs.sb.HasMetadataCsum() {
		tail = dxTailSize
	}
	entOff := dxRootInfoOff + infoLen
	if entOff+4 > bs {
		return nil, 0, badDx(dir.Ino, "bad dx_root info length %d", infoLen)
	}
	entries := root[entOff:]
	if want := (bs - 24 - infoLen - tail) / dxEntrySize; dxLimit(entries) != want {
		return nil, 0, badDx(dir.Ino, "root limit %d, want %d", dxLimit(entries), want)
	}
	frames := make([]dxFrame, 0, indirect+1)
	seen := []uint64{0}
	for level := 0; ; level++ {
		count := dxCount(entries)
		if count == 0 || count > dxLimit(entries) {
			return nil, 0, badDx(dir.Ino, "index count %d beyond limit %d", count, dxLimit(entries))
		}
		// Entry 0 has no hash (its slot holds count/limit): binary-search
		// entries 1..count-1 for the last hash <= ours.
		lo, hi := 1, count-1
		for lo <= hi {
			m := lo + (hi-lo)/2
			if dxHash(entries, m) > hash {
				hi = m - 1
			} else {
				lo = m + 1
			}
		}
		at := lo - 1
		frames = append(frames, dxFrame{entries: entries, at: at})
		blk := dxBlock(entries, at)
		for _, s := range seen {
			if s == blk {
				return nil, 0, badDx(dir.Ino, "index cycle: block %d points back to block %d", blk, s)
			}
		}
		if level >= indirect {
			return frames, hash, nil
		}
		seen = append(seen, blk)
		node, err := fs.dxIndexBlock(dir, blk)
		if err != nil {
			return nil, 0, err
		}
		entries = node[dxNodeEntryOff:]
		if want := (bs - dxNodeEntryOff - tail) / dxEntrySize; dxLimit(entries) != want {
			return nil, 0, badDx(dir.Ino, "node limit %d, want %d", dxLimit(entries), want)
		}
	}
}

// dxNextLeaf advances the path to the next leaf, as ext4_htree_next_block,
// and reports whether that leaf may still hold names with our hash (its
// starting hash equals ours, with the collision bit ignored).
func (fs *FS) dxNextLeaf(dir *Inode, frames []dxFrame, hash uint32) (bool, error) {
	i := len(frames) - 1
	for {
		frames[i].at++
		if frames[i].at < dxCount(frames[i].entries) {
			break
		}
		if i == 0 {
			return false, nil
		}
		i--
	}
	if dxHash(frames[i].entries, frames[i].at)&^1 != hash {
		return false, nil
	}
	bs := int(fs.blockSize)
	for ; i < len(frames)-1; i++ {
		node, err := fs.dxIndexBlock(dir, dxBlock(frames[i].entries, frames[i].at))
		if err != nil {
			return false, err
		}
		e := node[dxNodeEntryOff:]
		if c := dxCount(e); c == 0 || c > dxLimit(e) || dxNodeEntryOff+c*dxEntrySize > bs {
			return false, badDx(dir.Ino, "index count %d beyond limit %d", c, dxLimit(e))
		}
		frames[i+1] = dxFrame{entries: e, at: 0}
	}
	return true, nil
}

// dxLookup finds name through the hash index (ext4_dx_find_entry).
func (fs *FS) dxLookup(dir *Inode, name []byte) (uint32, FileType, error) {
	frames, hash, err := fs.dxProbe(dir, name)
	if err != nil {
		return 0, 0, err
	}
	// Each step visits a new leaf; a directory cannot have more leaves
	// than blocks, which bounds the walk even on a damaged index.
	nblocks, err := fs.dirBlockCount(dir)
	if err != nil {
		return 0, 0, err
	}
	for steps := uint64(0); steps <= nblocks; steps++ {
		last := frames[len(frames)-1]
		lblk := dxBlock(last.entries, last.at)
		b, _, err := fs.dirBlock(dir, lblk)
		if err != nil {
			return 0, 0, err
		}
		if b == nil {
			return 0, 0, corruptf(BadHtree, dir.Ino, 0, "hole at htree leaf block %d", lblk)
		}
		if fs.isDxInternal(dir, lblk, b) {
			return 0, 0, badDx(dir.Ino, "index block %d found where a leaf belongs", lblk)
		}
		if !fs.dirBlockCsumOK(dir, b) {
			return 0, 0, corruptf(BadChecksum, dir.Ino, 0, "directory block %d failed its checksum", lblk)
		}
		ino, ft, found, err := fs.searchDirBlock(dir, b, lblk, name)
		if err != nil {
			return 0, 0, dxError{err.(*CorruptError)}
		}
		if found {
			return ino, ft, nil
		}
		more, err := fs.dxNextLeaf(dir, frames, hash)
		if err != nil {
			return 0, 0, err
		}
		if !more {
			return 0, 0, ErrNotFound
		}
	}
	return 0, 0, badDx(dir.Ino, "htree walk did not end")
}
