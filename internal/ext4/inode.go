package ext4

import (
	"encoding/binary"
	"io/fs"
)

// Inode flags (i_flags) this package acts on or reports.
const (
	FlagSecrm       = 0x1
	FlagUnrm        = 0x2
	FlagCompr       = 0x4
	FlagSync        = 0x8
	FlagImmutable   = 0x10
	FlagAppend      = 0x20
	FlagNodump      = 0x40
	FlagNoatime     = 0x80
	FlagEncrypt     = 0x800
	FlagIndex       = 0x1000
	FlagImagic      = 0x2000
	FlagJournalData = 0x4000
	FlagNotail      = 0x8000
	FlagDirsync     = 0x10000
	FlagTopdir      = 0x20000
	FlagHugeFile    = 0x40000
	FlagExtents     = 0x80000
	FlagVerity      = 0x100000
	FlagEAInode     = 0x200000
	FlagDax         = 0x2000000
	FlagInlineData  = 0x10000000
	FlagProjinherit = 0x20000000
	FlagCasefold    = 0x40000000

	// FlagsUserVisible is EXT4_FL_USER_VISIBLE: the bits FS_IOC_GETFLAGS
	// reports (what lsattr shows).
	FlagsUserVisible = 0x705BDFFF
)

// File type bits of i_mode.
const (
	ModeFIFO     = 0x1000
	ModeChar     = 0x2000
	ModeDir      = 0x4000
	ModeBlock    = 0x6000
	ModeRegular  = 0x8000
	ModeSymlink  = 0xA000
	ModeSocket   = 0xC000
	ModeTypeMask = 0xF000
)

// Timestamp is a time as ext4 stores it: seconds since the epoch (with the
// extra epoch bits applied) and nanoseconds.
type Timestamp struct {
	Sec  int64
	Nsec uint32
}

// Inode is a decoded on-disk inode. It is shared through the inode cache:
// callers must not modify it.
type Inode struct {
	Ino        uint32
	Mode       uint16 // type and permission bits, as st_mode
	Uid, Gid   uint32
	Size       uint64
	LinksCount uint16
	// Blocks is i_blocks in 512-byte units (as st_blocks), with huge_file
	// applied.
	Blocks                      uint64
	Flags                       uint32
	Generation                  uint32
	FileACL                     uint64 // block of the external xattr block, or 0
	ProjectID                   uint32
	Atime, Mtime, Ctime, Crtime Timestamp
	// HasCrtime reports whether the inode is large enough to store a
	// creation time (the kernel reports STATX_BTIME only then).
	HasCrtime  bool
	Dtime      uint32
	ExtraIsize uint16
	// Block is i_block: the extent tree root, block map, fast symlink
	// target, device number or start of inline data.
	Block [60]byte
	// raw holds the whole on-disk inode (s_inode_size bytes), for the
	// in-inode extended attributes that follow i_extra_isize.
	raw []byte
}

// Type returns the file type bits of the mode.
func (in *Inode) Type() uint16 { return in.Mode & ModeTypeMask }

// IsDir reports whether the inode is a directory.
func (in *Inode) IsDir() bool { return in.Type() == ModeDir }

// IsRegular reports whether the inode is a regular file.
func (in *Inode) IsRegular() bool { return in.Type() == ModeRegular }

// IsSymlink reports whether the inode is a symbolic link.
func (in *Inode) IsSymlink() bool { return in.Type() == ModeSymlink }

// HasInlineData reports whether the data lives in the inode itself.
func (in *Inode) HasInlineData() bool { return in.Flags&FlagInlineData != 0 }

// FileMode converts the ext4 mode into an io/fs.FileMode.
func (in *Inode) FileMode() fs.FileMode {
	m := fs.FileMode(in.Mode & 0777)
	switch in.Type() {
	case ModeDir:
		m |= fs.ModeDir
	case ModeSymlink:
		m |= fs.ModeSymlink
	case ModeChar:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case ModeBlock:
		m |= fs.ModeDevice
	case ModeFIFO:
		m |= fs.ModeNamedPipe
	case ModeSocket:
		m |= fs.ModeSocket
	}
	if in.Mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if in.Mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if in.Mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}

// Rdev returns the device number of a character or block device inode in
// the kernel's encoding (major in bits 8-19, minor in bits 0-7 and 20-31),
// decoded as ext4 does: old 16-bit form in i_block[0], else new form in
// i_block[1].
func (in *Inode) Rdev() (major, minor uint32) {
	le := binary.LittleEndian
	if old := le.Uint32(in.Block[0:]); old != 0 {
		return (old >> 8) & 0xFF, old & 0xFF
	}
	dev := le.Uint32(in.Block[4:])
	return (dev & 0xFFF00) >> 8, (dev & 0xFF) | ((dev >> 12) & 0xFFF00)
}

// IsSpecialIno reports whether ino is reserved for filesystem metadata
// (below s_first_ino, other than the root, or one of the quota and orphan
// file inodes) and so is never reachable from a directory.
func (fs *FS) IsSpecialIno(ino uint32) bool {
	sb := fs.sb
	if ino == rootIno {
		return false
	}
	return ino < sb.FirstIno || ino == sb.UsrQuotaInum || ino == sb.GrpQuotaInum ||
		ino == sb.PrjQuotaInum || ino == sb.OrphanFileInum || ino == sb.JournalInum
}

// Inode reads inode ino as a path lookup would: the number must be a
// regular (non-reserved) inode in range, and the inode must be in use.
func (fs *FS) Inode(ino uint32) (*Inode, error) {
	if ino < rootIno || ino > fs.sb.InodesCount || fs.IsSpecialIno(ino) {
		return nil, corruptf(BadInode, ino, 0, "inode number %d is reserved or out of range (1..%d)", ino, fs.sb.InodesCount)
	}
	in, err := fs.readInode(ino)
	if err != nil {
		return nil, err
	}
	if in.LinksCount == 0 {
		// The kernel answers ESTALE for a directory entry that names a
		// deleted inode; it is corruption either way.
		return nil, corruptf(BadInode, ino, 0, "inode is deleted (link count 0) but still referenced")
	}
	return in, nil
}

// JournalInode reads the inode of the filesystem's internal journal
// (s_journal_inum), which Inode refuses as a reserved inode: journal
// recovery maps the journal through it. It is checked as any inode is
// (range, checksum, extra size); what makes a valid journal is for the
// caller to judge.
func (fs *FS) JournalInode() (*Inode, error) {
	if fs.sb.JournalInum == 0 {
		return nil, corruptf(BadInode, 0, 0, "the filesystem has no journal inode")
	}
	return fs.readInode(fs.sb.JournalInum)
}

// readInode loads any inode, including reserved ones, through the cache.
func (fs *FS) readInode(ino uint32) (*Inode, error) {
	if ino == 0 || ino > fs.sb.InodesCount {
		return nil, corruptf(BadInode, ino, 0, "inode number out of range (1..%d)", fs.sb.InodesCount)
	}
	if in, ok := fs.inodes.get(ino, uint64(ino)); ok {
		return in, nil
	}
	ipg := fs.sb.InodesPerGroup
	g, idx := (ino-1)/ipg, (ino-1)%ipg
	gd, err := fs.GroupDesc(g)
	if err != nil {
		return nil, err
	}
	isz := uint64(fs.sb.InodeSize)
	off := uint64(idx) * isz
	blk := gd.InodeTable + off/uint64(fs.blockSize)
	b, err := fs.readBlock(blk, ino)
	if err != nil {
		return nil, err
	}
	boff := off % uint64(fs.blockSize)
	raw := make([]byte, isz)
	copy(raw, b[boff:boff+isz])
	in, err := fs.parseInode(ino, raw, blk)
	if err != nil {
		return nil, err
	}
	// Like the kernel's iget, check the extent tree's root header now, so
	// that a damaged file fails its stat, not only its reads.
	if in.Flags&FlagExtents != 0 && (in.IsRegular() || in.IsDir() || in.IsSymlink() && !fs.isFastSymlink(in)) {
		if _, err := checkExtentHeader(in, in.Block[:], -1, 0); err != nil {
			return nil, err
		}
	}
	fs.inodes.put(ino, uint64(ino), in, inodeCost(len(raw)))
	return in, nil
}

// inodeCacheUnit is the inode size the inode cache's budget is counted
// in. A parsed inode keeps its whole on-disk copy (for in-inode xattrs),
// and s_inode_size may be as large as a block (64 KiB): counting each
// inode as one entry would let a filesystem of large inodes hold 4 GiB in
// a cache of 65,536 entries.
const inodeCacheUnit = 256

// inodeCost is what an inode of size bytes costs in the inode cache: one
// entry per started inodeCacheUnit.
func inodeCost(size int) int {
	return max(1, (size+inodeCacheUnit-1)/inodeCacheUnit)
}

// fitsInInode mirrors EXT4_FITS_IN_INODE: an extra field is present only
// when it ends within 128 + i_extra_isize bytes.
func fitsInInode(extra uint16, fieldEnd int) bool {
	return fieldEnd <= goodOldInoSize+int(extra)
}

func decodeTime(lo uint32, extra uint32, hasExtra bool) Timestamp {
	t := Timestamp{Sec: int64(int32(lo))}
	if hasExtra {
		t.Sec += int64(extra&3) << 32
		t.Nsec = extra >> 2
	}
	return t
}

func (fs *FS) parseInode(ino uint32, raw []byte, blk uint64) (*Inode, error) {
	le := binary.LittleEndian
	in := &Inode{
		Ino:        ino,
		Mode:       le.Uint16(raw[0x00:]),
		Uid:        uint32(le.Uint16(raw[0x02:])) | uint32(le.Uint16(raw[0x78:]))<<16,
		Size:       uint64(le.Uint32(raw[0x04:])),
		Dtime:      le.Uint32(raw[0x14:]),
		Gid:        uint32(le.Uint16(raw[0x18:])) | uint32(le.Uint16(raw[0x7A:]))<<16,
		LinksCount: le.Uint16(raw[0x1A:]),
		Flags:      le.Uint32(raw[0x20:]),
		Generation: le.Uint32(raw[0x64:]),
		FileACL:    uint64(le.Uint32(raw[0x68:])),
		raw:        raw,
	}
	copy(in.Block[:], raw[0x28:0x28+60])
	sb := fs.sb
	if sb.HasIncompat(Incompat64bit) {
		in.FileACL |= uint64(le.Uint16(raw[0x76:])) << 32
	}
	// The kernel uses i_size_high for regular files always, and for
	// directories only with large_dir.
	if in.IsRegular() || sb.HasIncompat(IncompatLargedir) {
		in.Size |= uint64(le.Uint32(raw[0x6C:])) << 32
	}
	if int64(in.Size) < 0 {
		return nil, corruptf(BadInode, ino, blk, "size %d is negative", int64(in.Size))
	}
	blocks := uint64(le.Uint32(raw[0x1C:]))
	if sb.HasRoCompat(RoCompatHugeFile) {
		blocks |= uint64(le.Uint16(raw[0x74:])) << 32
		if in.Flags&FlagHugeFile != 0 {
			blocks <<= fs.blockShift - 9
		}
	}
	in.Blocks = blocks
	if len(raw) > goodOldInoSize {
		in.ExtraIsize = le.Uint16(raw[0x80:])
		if goodOldInoSize+int(in.ExtraIsize) > len(raw) || in.ExtraIsize&3 != 0 {
			return nil, corruptf(BadInode, ino, blk, "bad extra_isize %d (inode size %d)", in.ExtraIsize, len(raw))
		}
	}
	if err := fs.verifyInodeCsum(in); err != nil {
		return nil, err
	}
	x := in.ExtraIsize
	has := func(end int) bool { return len(raw) > goodOldInoSize && fitsInInode(x, end) }
	extra := func(off int) uint32 {
		if has(off + 4) {
			return le.Uint32(raw[off:])
		}
		return 0
	}
	in.Ctime = decodeTime(le.Uint32(raw[0x0C:]), extra(0x84), has(0x88))
	in.Mtime = decodeTime(le.Uint32(raw[0x10:]), extra(0x88), has(0x8C))
	in.Atime = decodeTime(le.Uint32(raw[0x08:]), extra(0x8C), has(0x90))
	if has(0x94) {
		in.HasCrtime = true
		in.Crtime = decodeTime(le.Uint32(raw[0x90:]), extra(0x94), has(0x98))
	}
	if sb.HasRoCompat(RoCompatProject) && has(0xA0) {
		in.ProjectID = le.Uint32(raw[0x9C:])
	}
	if in.Flags&FlagCasefold != 0 && !sb.HasIncompat(IncompatCasefold) {
		return nil, corruptf(BadInode, ino, blk, "casefold flag without the casefold feature")
	}
	if in.Flags&FlagEncrypt != 0 {
		return nil, corruptf(BadInode, ino, blk, "inode is encrypted, which safefs does not support")
	}
	if in.HasInlineData() && !sb.HasIncompat(IncompatInlineData) {
		return nil, corruptf(BadInode, ino, blk, "inline data flag without the inline_data feature")
	}
	if in.Flags&FlagExtents != 0 && in.HasInlineData() {
		return nil, corruptf(BadInode, ino, blk, "both the extents and inline data flags are set")
	}
	return in, nil
}

// verifyInodeCsum checks the metadata_csum inode checksum the way
// ext4_inode_csum_verify does: the low 16 bits live in osd2, the high 16
// bits in the extra area when it is large enough.
func (fs *FS) verifyInodeCsum(in *Inode) error {
	sb := fs.sb
	if !sb.HasMetadataCsum() || sb.CreatorOS != 0 {
		return nil
	}
	raw := in.raw
	le := binary.LittleEndian
	const loOff, hiOff = 0x7C, 0x82
	seed := crc32cU32(crc32cU32(fs.csumSeed, in.Ino), in.Generation)
	c := crc32c(seed, raw[:loOff])
	c = crc32c(c, zero4[:2])
	c = crc32c(c, raw[loOff+2:goodOldInoSize])
	provided := uint32(le.Uint16(raw[loOff:]))
	hasHi := false
	if len(raw) > goodOldInoSize {
		c = crc32c(c, raw[goodOldInoSize:hiOff])
		off := hiOff
		if fitsInInode(in.ExtraIsize, hiOff+2) {
			hasHi = true
			c = crc32c(c, zero4[:2])
			off += 2
		}
		c = crc32c(c, raw[off:])
	}
	if hasHi {
		provided |= uint32(le.Uint16(raw[hiOff:])) << 16
	} else {
		c &= 0xFFFF
	}
	if c != provided {
		// A never-used inode in a zeroed table has a zero checksum; the
		// kernel treats an all-zero inode as valid (ext4_inode_csum_verify).
		if allZero(raw) {
			return nil
		}
		return corruptf(BadChecksum, in.Ino, 0, "inode checksum mismatch (stored 0x%x, computed 0x%x)", provided, c)
	}
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
