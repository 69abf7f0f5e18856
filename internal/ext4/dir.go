package ext4

import (
	"bytes"
	"encoding/binary"
	"errors"
)

// FileType is the file type stored in a directory entry (with the
// filetype feature); FTUnknown otherwise.
type FileType uint8

// Directory entry file types (EXT4_FT_*).
const (
	FTUnknown FileType = iota
	FTRegular
	FTDir
	FTChar
	FTBlock
	FTFIFO
	FTSocket
	FTSymlink
)

const (
	dirEntryHdr  = 8  // inode, rec_len, name_len, file_type
	dirTailSize  = 12 // ext4_dir_entry_tail
	dirTailFT    = 0xDE
	maxNameLen   = 255
	inlineDotdot = 4 // parent inode number at the start of inline dir data
)

// DirEntry is one name in a directory.
type DirEntry struct {
	// Name is the entry's name. It aliases cached metadata: do not
	// modify it.
	Name []byte
	Ino  uint32
	Type FileType
	// Next is the cursor to pass to ReadDir to continue after this entry.
	Next uint64
}

// dirRecLen is EXT4_DIR_REC_LEN: the space an entry with this name needs.
func dirRecLen(nameLen int) int { return (nameLen + dirEntryHdr + 3) &^ 3 }

// recLenFromDisk decodes rec_len, whose 65536 is stored as 0 or 65535 for
// 64 KiB blocks.
func recLenFromDisk(v uint16, bs int) int {
	if bs < 65536 {
		return int(v)
	}
	if v == 65535 || v == 0 {
		return bs
	}
	return int(v&65532) | int(v&3)<<16
}

// checkDirEntry applies __ext4_check_dir_entry to the entry at off in buf.
func (fs *FS) checkDirEntry(buf []byte, off, bs int) (recLen int, detail string) {
	if off+dirEntryHdr > len(buf) {
		return 0, "directory entry overrun"
	}
	le := binary.LittleEndian
	rl := recLenFromDisk(le.Uint16(buf[off+4:]), bs)
	nameLen := int(buf[off+6])
	next := off + rl
	switch {
	case rl < dirRecLen(1):
		return 0, "rec_len is smaller than minimal"
	case rl%4 != 0:
		return 0, "rec_len % 4 != 0"
	case rl < dirRecLen(nameLen):
		return 0, "rec_len is too small for name_len"
	case next > len(buf):
		return 0, "directory entry overrun"
	case next > len(buf)-dirRecLen(1) && next != len(buf):
		return 0, "directory entry too close to block end"
	case le.Uint32(buf[off:]) > fs.sb.InodesCount:
		return 0, "inode out of bounds"
	case next == len(buf) && nameLen == 1 && buf[off+dirEntryHdr] == '.':
		return 0, "'.' directory cannot be the last in data block"
	}
	return rl, ""
}

func (fs *FS) entryType(b byte) FileType {
	if !fs.sb.HasIncompat(IncompatFiletype) || b > byte(FTSymlink) {
		return FTUnknown
	}
	return FileType(b)
}

// isDx reports whether a directory is hash-indexed.
func (fs *FS) isDx(dir *Inode) bool {
	return fs.sb.HasCompat(CompatDirIndex) && dir.Flags&FlagIndex != 0 && !dir.HasInlineData()
}

// dirBlockCsumOK verifies a leaf block's ext4_dir_entry_tail checksum.
// Without metadata_csum every block passes.
func (fs *FS) dirBlockCsumOK(dir *Inode, b []byte) bool {
	if !fs.sb.HasMetadataCsum() {
		return true
	}
	le := binary.LittleEndian
	bs := len(b)
	t := b[bs-dirTailSize:]
	if le.Uint32(t) != 0 || recLenFromDisk(le.Uint16(t[4:]), bs) != dirTailSize || t[6] != 0 || t[7] != dirTailFT {
		return false
	}
	seed := crc32cU32(crc32cU32(fs.csumSeed, dir.Ino), dir.Generation)
	return crc32c(seed, b[:bs-dirTailSize]) == le.Uint32(t[8:])
}

// isDxInternal is is_dx_internal_node: block 0 of an indexed directory,
// or a block whose first entry is an empty one spanning the block.
func (fs *FS) isDxInternal(dir *Inode, lblk uint64, b []byte) bool {
	if !fs.isDx(dir) {
		return false
	}
	if lblk == 0 {
		return true
	}
	le := binary.LittleEndian
	return le.Uint32(b) == 0 && recLenFromDisk(le.Uint16(b[4:]), len(b)) == len(b)
}

// dirBlock returns logical block lblk of a directory, or nil for a hole.
// next is the first logical block after the run lblk belongs to, so that
// callers skip holes in one step.
func (fs *FS) dirBlock(dir *Inode, lblk uint64) (b []byte, next uint64, err error) {
	ext, err := fs.MapBlock(dir, lblk)
	if err != nil {
		return nil, 0, err
	}
	if ext.Kind != Mapped {
		return nil, ext.Logical + ext.Len, nil
	}
	b, err = fs.readBlock(ext.Physical, dir.Ino)
	return b, lblk + 1, err
}

// dirBlockCount returns how many blocks directory dir spans, by its size.
// A directory cannot be larger than the filesystem that holds it, even
// with holes (neither the kernel nor e2fsck leaves more than a few). One
// that claims to be is refused: with large_dir a hostile inode can claim
// 2^32 blocks, all mapped to the same few device blocks, and every
// listing of it or lookup in it would read each of them, for hours.
func (fs *FS) dirBlockCount(dir *Inode) (uint64, error) {
	n := (dir.Size + uint64(fs.blockSize) - 1) >> fs.blockShift
	if n > fs.sb.BlocksCount {
		return 0, corruptf(BadInode, dir.Ino, 0, "directory of %d bytes is larger than the filesystem (%d blocks of %d bytes)",
			dir.Size, fs.sb.BlocksCount, fs.blockSize)
	}
	return n, nil
}

// report hands a corruption that was skipped over to Options.Report.
func (fs *FS) report(err error) {
	if fs.opts.Report != nil {
		fs.opts.Report(err)
	}
}

// ReadDir calls fn for each entry of directory dir from cursor pos on
// (0 starts at the beginning), in on-disk order, until fn returns false or
// the directory ends. Entry.Next resumes after that entry; cursors stay
// valid across calls because the filesystem does not change underneath.
// Like the kernel's readdir, a damaged block is reported through
// Options.Report and skipped, so one bad block hides only its own entries.
func (fs *FS) ReadDir(dir *Inode, pos uint64, fn func(DirEntry) bool) error {
	if !dir.IsDir() {
		return corruptf(BadDirEntry, dir.Ino, 0, "not a directory")
	}
	if dir.HasInlineData() {
		return fs.readInlineDir(dir, pos, fn)
	}
	bs := uint64(fs.blockSize)
	nblocks, err := fs.dirBlockCount(dir)
	if err != nil {
		return err
	}
	for lblk := pos / bs; lblk < nblocks; {
		// A block that cannot be mapped or read ends the listing with an
		// error, as in the kernel; only damage inside a block is skipped.
		b, next, err := fs.dirBlock(dir, lblk)
		if err != nil {
			return err
		}
		cur := lblk
		lblk = next
		if b == nil {
			continue
		}
		base := cur * bs
		start := 0
		if pos > base {
			start = int(pos - base)
		}
		if fs.isDxInternal(dir, cur, b) {
			if cur != 0 {
				continue
			}
			// Block 0 of an indexed directory is the dx_root: its
			// first two entries are "." and "..", the rest is index.
			if !fs.walkDirBlock(dir, b[:min(len(b), 24)], base, start, true, fn) {
				return nil
			}
			continue
		}
		if !fs.dirBlockCsumOK(dir, b) {
			fs.report(corruptf(BadChecksum, dir.Ino, 0, "directory block %d failed its checksum", cur))
			continue
		}
		if !fs.walkDirBlock(dir, b, base, start, false, fn) {
			return nil
		}
	}
	return nil
}

// walkDirBlock calls fn for the live entries of one directory block whose
// first byte is at cursor position base, skipping those before offset
// start. It returns false when fn asked to stop. dxRoot limits the walk to
// the "." and ".." entries of a dx_root.
func (fs *FS) walkDirBlock(dir *Inode, b []byte, base uint64, start int, dxRoot bool, fn func(DirEntry) bool) bool {
	le := binary.LittleEndian
	bs := len(b)
	if dxRoot {
		bs = int(fs.blockSize)
	}
	for off, n := 0, 0; off < len(b) && n < len(b)/dirEntryHdr+1; n++ {
		var rl int
		if dxRoot {
			if off+12 > len(b) {
				return true
			}
			rl = 12
		} else {
			var detail string
			rl, detail = fs.checkDirEntry(b, off, bs)
			if detail != "" {
				fs.report(corruptf(BadDirEntry, dir.Ino, 0, "at directory offset %d: %s", base+uint64(off), detail))
				return true
			}
		}
		ino := le.Uint32(b[off:])
		nameLen := int(b[off+6])
		if ino != 0 && off >= start && off+dirEntryHdr+nameLen <= len(b) {
			if ino > fs.sb.InodesCount {
				fs.report(corruptf(BadDirEntry, dir.Ino, 0, "at directory offset %d: inode out of bounds", base+uint64(off)))
				return true
			}
			e := DirEntry{
				Name: b[off+dirEntryHdr : off+dirEntryHdr+nameLen],
				Ino:  ino,
				Type: fs.entryType(b[off+7]),
				Next: base + uint64(off+rl),
			}
			if !fn(e) {
				return false
			}
		}
		off += rl
	}
	return true
}

// readInlineDir serves a directory stored in the inode. Cursors: 0 is
// ".", 1 is "..", then byte offsets in i_block (4..59) and past 60 in the
// system.data area; "." and ".." are synthesized because inline directories
// store only the parent's number.
func (fs *FS) readInlineDir(dir *Inode, pos uint64, fn func(DirEntry) bool) error {
	data, err := fs.inlineData(dir)
	if err != nil {
		return err
	}
	parent := binary.LittleEndian.Uint32(data)
	if pos == 0 && !fn(DirEntry{Name: []byte("."), Ino: dir.Ino, Type: fs.entryType(byte(FTDir)), Next: 1}) {
		return nil
	}
	if pos <= 1 && !fn(DirEntry{Name: []byte(".."), Ino: parent, Type: fs.entryType(byte(FTDir)), Next: inlineDotdot}) {
		return nil
	}
	regions := [][2]int{{inlineDotdot, inlineBlockSize}, {inlineBlockSize, len(data)}}
	for _, r := range regions {
		if r[1] <= r[0] {
			continue
		}
		start := 0
		if pos > uint64(r[0]) {
			start = int(pos) - r[0]
		}
		if start >= r[1]-r[0] {
			continue
		}
		if !fs.walkDirBlock(dir, data[r[0]:r[1]], uint64(r[0]), start, false, fn) {
			return nil
		}
	}
	return nil
}

// Lookup finds name in directory dir and returns its inode number and
// file type. It uses the hash index when the directory has one, falling
// back to a linear scan when the index is damaged, as the kernel does.
func (fs *FS) Lookup(dir *Inode, name []byte) (uint32, FileType, error) {
	if !dir.IsDir() {
		return 0, 0, corruptf(BadDirEntry, dir.Ino, 0, "not a directory")
	}
	if len(name) == 0 || len(name) > maxNameLen {
		return 0, 0, ErrNotFound
	}
	if dir.HasInlineData() {
		return fs.lookupInline(dir, name)
	}
	if fs.isDx(dir) {
		ino, ft, err := fs.dxLookup(dir, name)
		if !errors.Is(err, errBadDx) {
			return ino, ft, err
		}
		fs.report(err)
	}
	return fs.lookupLinear(dir, name)
}

func (fs *FS) lookupInline(dir *Inode, name []byte) (uint32, FileType, error) {
	var ino uint32
	var ft FileType
	err := fs.readInlineDir(dir, 0, func(e DirEntry) bool {
		if bytes.Equal(e.Name, name) {
			ino, ft = e.Ino, e.Type
			return false
		}
		return true
	})
	if err != nil {
		return 0, 0, err
	}
	if ino == 0 {
		return 0, 0, ErrNotFound
	}
	return ino, ft, nil
}

func (fs *FS) lookupLinear(dir *Inode, name []byte) (uint32, FileType, error) {
	nblocks, err := fs.dirBlockCount(dir)
	if err != nil {
		return 0, 0, err
	}
	for lblk := uint64(0); lblk < nblocks; {
		b, next, err := fs.dirBlock(dir, lblk)
		if err != nil {
			return 0, 0, err
		}
		if b == nil {
			lblk = next
			continue
		}
		if !fs.isDxInternal(dir, lblk, b) && !fs.dirBlockCsumOK(dir, b) {
			return 0, 0, corruptf(BadChecksum, dir.Ino, 0, "directory block %d failed its checksum", lblk)
		}
		ino, ft, found, err := fs.searchDirBlock(dir, b, lblk, name)
		if found || err != nil {
			return ino, ft, err
		}
		lblk = next
	}
	return 0, 0, ErrNotFound
}

// searchDirBlock is ext4_search_dir: a quick walk that fully checks only
// the entry that matches.
func (fs *FS) searchDirBlock(dir *Inode, b []byte, lblk uint64, name []byte) (uint32, FileType, bool, error) {
	le := binary.LittleEndian
	bs := len(b)
	for off := 0; off < bs-dirEntryHdr; {
		ino := le.Uint32(b[off:])
		nl := int(b[off+6])
		if ino != 0 && nl == len(name) && off+dirEntryHdr+nl <= bs && bytes.Equal(b[off+dirEntryHdr:off+dirEntryHdr+nl], name) {
			if _, detail := fs.checkDirEntry(b, off, bs); detail != "" {
				return 0, 0, false, corruptf(BadDirEntry, dir.Ino, 0, "at directory offset %d: %s", lblk*uint64(bs)+uint64(off), detail)
			}
			return ino, fs.entryType(b[off+7]), true, nil
		}
		rl := recLenFromDisk(le.Uint16(b[off+4:]), bs)
		if rl <= 0 {
			return 0, 0, false, corruptf(BadDirEntry, dir.Ino, 0, "zero rec_len at directory offset %d", lblk*uint64(bs)+uint64(off))
		}
		off += rl
	}
	return 0, 0, false, nil
}
