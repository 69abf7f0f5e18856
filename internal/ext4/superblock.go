package ext4

import (
	"encoding/binary"
	"math/bits"
)

// SuperblockOffset is where the primary superblock lives on the device.
const SuperblockOffset = 1024

// SuperblockSize is the on-disk size of the superblock.
const SuperblockSize = 1024

const (
	superMagic      = 0xEF53
	stateErrors     = 0x2
	flagsSignedHash = 0x1
	flagsUnsigned   = 0x2
	checksumCRC32C  = 1
	goodOldInoSize  = 128
	goodOldFirstIno = 11
	rootIno         = 2
	maxBlockLog     = 16 // 64 KiB blocks
)

// Superblock holds the fields of the ext2/3/4 superblock this package uses,
// decoded from little-endian and combined with their _hi halves where the
// features say those halves are valid.
type Superblock struct {
	InodesCount       uint32
	BlocksCount       uint64
	RBlocksCount      uint64
	FreeBlocksCount   uint64
	FreeInodesCount   uint32
	FirstDataBlock    uint32
	LogBlockSize      uint32
	LogClusterSize    uint32
	BlocksPerGroup    uint32
	ClustersPerGroup  uint32
	InodesPerGroup    uint32
	Mtime, Wtime      uint32
	Magic             uint16
	State             uint16
	Errors            uint16
	MinorRevLevel     uint16
	CreatorOS         uint32
	RevLevel          uint32
	FirstIno          uint32
	InodeSize         uint16
	FeatureCompat     uint32
	FeatureIncompat   uint32
	FeatureRoCompat   uint32
	UUID              [16]byte
	VolumeName        [16]byte
	LastMounted       [64]byte
	ReservedGdtBlocks uint16
	JournalUUID       [16]byte
	JournalInum       uint32
	JournalDev        uint32
	LastOrphan        uint32
	HashSeed          [4]uint32
	DefHashVersion    uint8
	DescSize          uint16
	FirstMetaBG       uint32
	MkfsTime          uint32
	MinExtraIsize     uint16
	WantExtraIsize    uint16
	Flags             uint32
	MMPInterval       uint16
	MMPBlock          uint64
	LogGroupsPerFlex  uint8
	ChecksumType      uint8
	OverheadClusters  uint32
	BackupBGs         [2]uint32
	LpfIno            uint32
	ChecksumSeed      uint32
	Encoding          uint16
	OrphanFileInum    uint32
	UsrQuotaInum      uint32
	GrpQuotaInum      uint32
	PrjQuotaInum      uint32
	Checksum          uint32
}

// BlockSize is the filesystem block size in bytes.
func (sb *Superblock) BlockSize() uint32 { return 1024 << sb.LogBlockSize }

// ClusterSize is the allocation unit in bytes (larger than BlockSize only
// with bigalloc).
func (sb *Superblock) ClusterSize() uint32 { return 1024 << sb.LogClusterSize }

// NeedsRecovery reports whether the journal holds unreplayed transactions.
func (sb *Superblock) NeedsRecovery() bool { return sb.HasIncompat(IncompatRecover) }

// HasMetadataCsum reports whether crc32c metadata checksums are in use.
func (sb *Superblock) HasMetadataCsum() bool { return sb.HasRoCompat(RoCompatMetadataCsum) }

// HasGroupDescCsum reports whether group descriptors carry checksums of
// either kind (crc16 with uninit_bg, crc32c with metadata_csum).
func (sb *Superblock) HasGroupDescCsum() bool {
	return sb.HasMetadataCsum() || sb.HasRoCompat(RoCompatGdtCsum)
}

// ParseSuperblock decodes a 1024-byte superblock and checks that it
// describes a filesystem this package can read. devSize, when positive, is
// the device size in bytes; a filesystem larger than its device is refused
// because its tail is missing.
func ParseSuperblock(b []byte, devSize int64) (*Superblock, error) {
	if len(b) < SuperblockSize {
		return nil, formatf("superblock is %d bytes, want %d", len(b), SuperblockSize)
	}
	le := binary.LittleEndian
	sb := &Superblock{
		InodesCount:       le.Uint32(b[0x00:]),
		BlocksCount:       uint64(le.Uint32(b[0x04:])),
		RBlocksCount:      uint64(le.Uint32(b[0x08:])),
		FreeBlocksCount:   uint64(le.Uint32(b[0x0C:])),
		FreeInodesCount:   le.Uint32(b[0x10:]),
		FirstDataBlock:    le.Uint32(b[0x14:]),
		LogBlockSize:      le.Uint32(b[0x18:]),
		LogClusterSize:    le.Uint32(b[0x1C:]),
		BlocksPerGroup:    le.Uint32(b[0x20:]),
		ClustersPerGroup:  le.Uint32(b[0x24:]),
		InodesPerGroup:    le.Uint32(b[0x28:]),
		Mtime:             le.Uint32(b[0x2C:]),
		Wtime:             le.Uint32(b[0x30:]),
		Magic:             le.Uint16(b[0x38:]),
		State:             le.Uint16(b[0x3A:]),
		Errors:            le.Uint16(b[0x3C:]),
		MinorRevLevel:     le.Uint16(b[0x3E:]),
		CreatorOS:         le.Uint32(b[0x48:]),
		RevLevel:          le.Uint32(b[0x4C:]),
		FirstIno:          le.Uint32(b[0x54:]),
		InodeSize:         le.Uint16(b[0x58:]),
		FeatureCompat:     le.Uint32(b[0x5C:]),
		FeatureIncompat:   le.Uint32(b[0x60:]),
		FeatureRoCompat:   le.Uint32(b[0x64:]),
		ReservedGdtBlocks: le.Uint16(b[0xCE:]),
		JournalInum:       le.Uint32(b[0xE0:]),
		JournalDev:        le.Uint32(b[0xE4:]),
		LastOrphan:        le.Uint32(b[0xE8:]),
		DefHashVersion:    b[0xFC],
		DescSize:          le.Uint16(b[0xFE:]),
		FirstMetaBG:       le.Uint32(b[0x104:]),
		MkfsTime:          le.Uint32(b[0x108:]),
		MinExtraIsize:     le.Uint16(b[0x15C:]),
		WantExtraIsize:    le.Uint16(b[0x15E:]),
		Flags:             le.Uint32(b[0x160:]),
		MMPInterval:       le.Uint16(b[0x166:]),
		MMPBlock:          le.Uint64(b[0x168:]),
		LogGroupsPerFlex:  b[0x174],
		ChecksumType:      b[0x175],
		UsrQuotaInum:      le.Uint32(b[0x240:]),
		GrpQuotaInum:      le.Uint32(b[0x244:]),
		OverheadClusters:  le.Uint32(b[0x248:]),
		BackupBGs:         [2]uint32{le.Uint32(b[0x24C:]), le.Uint32(b[0x250:])},
		LpfIno:            le.Uint32(b[0x268:]),
		PrjQuotaInum:      le.Uint32(b[0x26C:]),
		ChecksumSeed:      le.Uint32(b[0x270:]),
		Encoding:          le.Uint16(b[0x27C:]),
		OrphanFileInum:    le.Uint32(b[0x280:]),
		Checksum:          le.Uint32(b[0x3FC:]),
	}
	copy(sb.UUID[:], b[0x68:0x78])
	copy(sb.VolumeName[:], b[0x78:0x88])
	copy(sb.LastMounted[:], b[0x88:0xC8])
	copy(sb.JournalUUID[:], b[0xD0:0xE0])
	for i := range sb.HashSeed {
		sb.HashSeed[i] = le.Uint32(b[0xEC+4*i:])
	}
	if sb.Magic != superMagic {
		return nil, formatf("no ext2/ext3/ext4 superblock (magic 0x%04x, want 0x%04x)", sb.Magic, superMagic)
	}
	if sb.HasIncompat(Incompat64bit) {
		sb.BlocksCount |= uint64(le.Uint32(b[0x150:])) << 32
		sb.RBlocksCount |= uint64(le.Uint32(b[0x154:])) << 32
		sb.FreeBlocksCount |= uint64(le.Uint32(b[0x158:])) << 32
	}
	if sb.RevLevel == 0 {
		// Revision 0 predates these fields; the kernel uses fixed values.
		sb.FirstIno = goodOldFirstIno
		sb.InodeSize = goodOldInoSize
	}
	if sb.HasIncompat(IncompatJournalDev) {
		return nil, &FeatureError{Feature: "journal_dev", Reason: incompatRefusals[IncompatJournalDev]}
	}
	if sb.HasMetadataCsum() {
		if sb.ChecksumType != checksumCRC32C {
			return nil, formatf("superblock names checksum type %d; only crc32c (1) exists", sb.ChecksumType)
		}
		if got := crc32c(^uint32(0), b[:0x3FC]); got != sb.Checksum {
			return nil, formatf("superblock checksum mismatch (stored 0x%08x, computed 0x%08x); run e2fsck", sb.Checksum, got)
		}
	}
	if err := sb.checkGeometry(devSize); err != nil {
		return nil, err
	}
	if err := sb.checkFeatures(); err != nil {
		return nil, err
	}
	return sb, nil
}

// checkGeometry applies the kernel's sanity checks on sizes and counts, so
// that every later computation (group numbers, table offsets) stays in range.
func (sb *Superblock) checkGeometry(devSize int64) error {
	if sb.LogBlockSize > maxBlockLog-10 {
		return formatf("invalid block size 2^%d KiB", sb.LogBlockSize)
	}
	bs := uint64(sb.BlockSize())
	if sb.RevLevel > 1 {
		return formatf("unknown superblock revision %d", sb.RevLevel)
	}
	if sb.InodeSize < goodOldInoSize || uint64(sb.InodeSize) > bs || bits.OnesCount16(sb.InodeSize) != 1 {
		return formatf("invalid inode size %d (block size %d)", sb.InodeSize, bs)
	}
	if sb.FirstIno < goodOldFirstIno && sb.RevLevel > 0 {
		return formatf("invalid first inode number %d", sb.FirstIno)
	}
	if sb.HasRoCompat(RoCompatBigalloc) {
		if sb.LogClusterSize < sb.LogBlockSize || sb.LogClusterSize > 30 {
			return formatf("invalid cluster size 2^%d KiB with block size %d", sb.LogClusterSize, bs)
		}
		if !sb.HasIncompat(IncompatExtents) {
			return formatf("bigalloc without extents is not a valid filesystem")
		}
		ratio := uint64(1) << (sb.LogClusterSize - sb.LogBlockSize)
		if sb.ClustersPerGroup == 0 || uint64(sb.ClustersPerGroup) > bs*8 ||
			uint64(sb.BlocksPerGroup) != uint64(sb.ClustersPerGroup)*ratio {
			return formatf("invalid clusters per group %d (blocks per group %d)", sb.ClustersPerGroup, sb.BlocksPerGroup)
		}
	} else {
		if sb.LogClusterSize != sb.LogBlockSize {
			// The kernel insists on this for non-bigalloc filesystems.
			return formatf("fragment size 2^%d KiB differs from block size", sb.LogClusterSize)
		}
		sb.ClustersPerGroup = sb.BlocksPerGroup
	}
	if sb.BlocksPerGroup == 0 || uint64(sb.BlocksPerGroup) > bs*8 && !sb.HasRoCompat(RoCompatBigalloc) {
		return formatf("invalid blocks per group %d", sb.BlocksPerGroup)
	}
	inodesPerBlock := bs / uint64(sb.InodeSize)
	if uint64(sb.InodesPerGroup) < inodesPerBlock || uint64(sb.InodesPerGroup) > bs*8 {
		return formatf("invalid inodes per group %d", sb.InodesPerGroup)
	}
	if sb.BlocksCount == 0 || uint64(sb.FirstDataBlock) >= sb.BlocksCount {
		return formatf("invalid first data block %d (block count %d)", sb.FirstDataBlock, sb.BlocksCount)
	}
	if bs > 1024 && sb.FirstDataBlock != 0 {
		return formatf("first data block is %d with %d-byte blocks, want 0", sb.FirstDataBlock, bs)
	}
	if sb.BlocksCount > 1<<48 {
		return formatf("block count %d is beyond any ext4 filesystem", sb.BlocksCount)
	}
	groups := (sb.BlocksCount - uint64(sb.FirstDataBlock) + uint64(sb.BlocksPerGroup) - 1) / uint64(sb.BlocksPerGroup)
	if groups > 1<<32-1 {
		return formatf("too many block groups (%d)", groups)
	}
	if groups*uint64(sb.InodesPerGroup) != uint64(sb.InodesCount) {
		return formatf("inode count %d does not match %d groups of %d inodes", sb.InodesCount, groups, sb.InodesPerGroup)
	}
	if sb.HasIncompat(Incompat64bit) {
		if sb.DescSize < 64 || sb.DescSize > 1024 || bits.OnesCount16(sb.DescSize) != 1 {
			return formatf("invalid group descriptor size %d", sb.DescSize)
		}
	} else {
		sb.DescSize = 32
	}
	descPerBlock := bs / uint64(sb.DescSize)
	gdtBlocks := (groups + descPerBlock - 1) / descPerBlock
	if sb.HasIncompat(IncompatMetaBG) && uint64(sb.FirstMetaBG) > gdtBlocks {
		return formatf("first meta block group %d is beyond the %d descriptor blocks", sb.FirstMetaBG, gdtBlocks)
	}
	// The flat descriptor table follows the primary superblock; one that
	// cannot fit in the filesystem means an impossible group count (the
	// kernel fails reading it at mount). Checking here keeps every later
	// walk over the groups proportional to the device.
	if !sb.HasIncompat(IncompatMetaBG) && SuperblockOffset/bs+1+gdtBlocks > sb.BlocksCount {
		return formatf("%d block groups need %d descriptor blocks, more than the filesystem's %d blocks", groups, gdtBlocks, sb.BlocksCount)
	}
	if sb.InodesCount < sb.FirstIno || sb.InodesCount < rootIno {
		return formatf("inode count %d is below the first inode %d", sb.InodesCount, sb.FirstIno)
	}
	if devSize > 0 && sb.BlocksCount > uint64(devSize)/bs {
		return formatf("the filesystem has %d blocks of %d bytes but the device holds only %d: the device or image is truncated",
			sb.BlocksCount, bs, uint64(devSize)/bs)
	}
	return nil
}
