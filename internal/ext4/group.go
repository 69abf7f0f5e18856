package ext4

import (
	"encoding/binary"
)

// Group descriptor flags (bg_flags).
const (
	BGInodeUninit = 0x1
	BGBlockUninit = 0x2
	BGInodeZeroed = 0x4
)

// GroupDesc is one block group descriptor, with its _hi halves merged when
// the filesystem uses 64-byte descriptors.
type GroupDesc struct {
	BlockBitmap     uint64
	InodeBitmap     uint64
	InodeTable      uint64
	FreeBlocksCount uint32
	FreeInodesCount uint32
	UsedDirsCount   uint32
	Flags           uint16
	ItableUnused    uint32
	Checksum        uint16
}

// hasSuper reports whether group g holds a superblock backup (and so a
// copy of the descriptor table), per sparse_super and sparse_super2.
func (sb *Superblock) hasSuper(g uint32) bool {
	if g == 0 {
		return true
	}
	if sb.HasCompat(CompatSparseSuper2) {
		return g == sb.BackupBGs[0] || g == sb.BackupBGs[1]
	}
	if g <= 1 || !sb.HasRoCompat(RoCompatSparseSuper) {
		return true
	}
	if g&1 == 0 {
		return false
	}
	return isPower(g, 3) || isPower(g, 5) || isPower(g, 7)
}

func isPower(n, base uint32) bool {
	p := uint64(base)
	for p < uint64(n) {
		p *= uint64(base)
	}
	return p == uint64(n)
}

// groupFirstBlock is the first block of group g.
func (fs *FS) groupFirstBlock(g uint32) uint64 {
	return uint64(fs.sb.FirstDataBlock) + uint64(g)*uint64(fs.sb.BlocksPerGroup)
}

// descBlock returns the physical block holding the descriptor of group g,
// following the kernel's descriptor_loc: a flat table after the primary
// superblock, or with meta_bg, one block at the start of each meta group.
func (fs *FS) descBlock(g uint32) uint64 {
	nr := g / fs.descPerBlock
	sb := fs.sb
	if !sb.HasIncompat(IncompatMetaBG) || nr < sb.FirstMetaBG {
		sbBlock := uint64(SuperblockOffset) / uint64(fs.blockSize) // 1 with 1 KiB blocks, else 0
		return sbBlock + uint64(nr) + 1
	}
	first := nr * fs.descPerBlock
	var hasSuper uint64
	if sb.hasSuper(first) {
		hasSuper = 1
	}
	if fs.blockSize == 1024 && nr == 0 && sb.FirstDataBlock == 0 {
		hasSuper++
	}
	return fs.groupFirstBlock(first) + hasSuper
}

// GroupDesc returns the descriptor of group g, checking its checksum.
func (fs *FS) GroupDesc(g uint32) (*GroupDesc, error) {
	if g >= fs.groupCount {
		return nil, &CorruptError{Kind: BadGroupDescriptor, Group: int64(g), Detail: "group number beyond the last group"}
	}
	if gd, ok := fs.groups.get(g, uint64(g)); ok {
		return gd, nil
	}
	blk := fs.descBlock(g)
	b, err := fs.readBlock(blk, 0)
	if err != nil {
		return nil, err
	}
	ds := uint32(fs.sb.DescSize)
	off := (g % fs.descPerBlock) * ds
	raw := b[off : off+ds]
	gd := parseGroupDesc(raw, fs.sb.HasIncompat(Incompat64bit))
	if err := fs.verifyGroupDesc(g, raw, gd); err != nil {
		return nil, err
	}
	// An inode table that runs off the filesystem would turn every inode
	// of the group into a read of garbage or of another group's data.
	itBlocks := (uint64(fs.sb.InodesPerGroup)*uint64(fs.sb.InodeSize) + uint64(fs.blockSize) - 1) / uint64(fs.blockSize)
	if !fs.validRange(gd.InodeTable, itBlocks) {
		return nil, &CorruptError{Kind: BadGroupDescriptor, Group: int64(g), Block: blk,
			Detail: "inode table lies outside the filesystem"}
	}
	fs.groups.put(g, uint64(g), gd, 1)
	return gd, nil
}

func parseGroupDesc(b []byte, is64 bool) *GroupDesc {
	le := binary.LittleEndian
	gd := &GroupDesc{
		BlockBitmap:     uint64(le.Uint32(b[0x00:])),
		InodeBitmap:     uint64(le.Uint32(b[0x04:])),
		InodeTable:      uint64(le.Uint32(b[0x08:])),
		FreeBlocksCount: uint32(le.Uint16(b[0x0C:])),
		FreeInodesCount: uint32(le.Uint16(b[0x0E:])),
		UsedDirsCount:   uint32(le.Uint16(b[0x10:])),
		Flags:           le.Uint16(b[0x12:]),
		ItableUnused:    uint32(le.Uint16(b[0x1C:])),
		Checksum:        le.Uint16(b[0x1E:]),
	}
	if is64 && len(b) >= 64 {
		gd.BlockBitmap |= uint64(le.Uint32(b[0x20:])) << 32
		gd.InodeBitmap |= uint64(le.Uint32(b[0x24:])) << 32
		gd.InodeTable |= uint64(le.Uint32(b[0x28:])) << 32
		gd.FreeBlocksCount |= uint32(le.Uint16(b[0x2C:])) << 16
		gd.FreeInodesCount |= uint32(le.Uint16(b[0x2E:])) << 16
		gd.UsedDirsCount |= uint32(le.Uint16(b[0x30:])) << 16
		gd.ItableUnused |= uint32(le.Uint16(b[0x32:])) << 16
	}
	return gd
}

// groupDescCsum computes the descriptor checksum as ext4_group_desc_csum:
// crc32c (low 16 bits) with metadata_csum, else crc16 with uninit_bg.
func (fs *FS) groupDescCsum(g uint32, raw []byte) uint16 {
	const csumOff = 0x1E
	var le [4]byte
	binary.LittleEndian.PutUint32(le[:], g)
	if fs.sb.HasMetadataCsum() {
		c := crc32c(fs.csumSeed, le[:])
		c = crc32c(c, raw[:csumOff])
		c = crc32c(c, zero4[:2])
		c = crc32c(c, raw[csumOff+2:])
		return uint16(c)
	}
	c := crc16(0xFFFF, fs.sb.UUID[:])
	c = crc16(c, le[:])
	c = crc16(c, raw[:csumOff])
	if fs.sb.HasIncompat(Incompat64bit) && len(raw) > csumOff+2 {
		c = crc16(c, raw[csumOff+2:])
	}
	return c
}

func (fs *FS) verifyGroupDesc(g uint32, raw []byte, gd *GroupDesc) error {
	if !fs.sb.HasGroupDescCsum() {
		return nil
	}
	if want := fs.groupDescCsum(g, raw); want != gd.Checksum {
		return &CorruptError{Kind: BadChecksum, Group: int64(g), Block: fs.descBlock(g),
			Detail: "group descriptor checksum mismatch; run e2fsck"}
	}
	return nil
}
