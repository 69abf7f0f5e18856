package ext4

import (
	"fmt"
	"math/bits"
	"strings"
)

// Feature flags, by the compat/incompat/ro_compat word they live in.
const (
	CompatDirPrealloc   = 0x1
	CompatImagicInodes  = 0x2
	CompatHasJournal    = 0x4
	CompatExtAttr       = 0x8
	CompatResizeInode   = 0x10
	CompatDirIndex      = 0x20
	CompatLazyBG        = 0x40
	CompatExcludeBitmap = 0x100
	CompatSparseSuper2  = 0x200
	CompatFastCommit    = 0x400
	CompatStableInodes  = 0x800
	CompatOrphanFile    = 0x1000

	IncompatCompression = 0x1
	IncompatFiletype    = 0x2
	IncompatRecover     = 0x4
	IncompatJournalDev  = 0x8
	IncompatMetaBG      = 0x10
	IncompatExtents     = 0x40
	Incompat64bit       = 0x80
	IncompatMMP         = 0x100
	IncompatFlexBG      = 0x200
	IncompatEAInode     = 0x400
	IncompatDirdata     = 0x1000
	IncompatCsumSeed    = 0x2000
	IncompatLargedir    = 0x4000
	IncompatInlineData  = 0x8000
	IncompatEncrypt     = 0x10000
	IncompatCasefold    = 0x20000

	RoCompatSparseSuper   = 0x1
	RoCompatLargeFile     = 0x2
	RoCompatBtreeDir      = 0x4
	RoCompatHugeFile      = 0x8
	RoCompatGdtCsum       = 0x10
	RoCompatDirNlink      = 0x20
	RoCompatExtraIsize    = 0x40
	RoCompatHasSnapshot   = 0x80
	RoCompatQuota         = 0x100
	RoCompatBigalloc      = 0x200
	RoCompatMetadataCsum  = 0x400
	RoCompatReplica       = 0x800
	RoCompatReadonly      = 0x1000
	RoCompatProject       = 0x2000
	RoCompatSharedBlocks  = 0x4000
	RoCompatVerity        = 0x8000
	RoCompatOrphanPresent = 0x10000
)

// Feature names as e2fsprogs spells them (lib/e2p/feature.c), so that
// messages match what dumpe2fs and mke2fs -O use.
var (
	compatNames = map[uint32]string{
		CompatDirPrealloc: "dir_prealloc", CompatImagicInodes: "imagic_inodes",
		CompatHasJournal: "has_journal", CompatExtAttr: "ext_attr",
		CompatResizeInode: "resize_inode", CompatDirIndex: "dir_index",
		CompatLazyBG: "lazy_bg", CompatExcludeBitmap: "snapshot_bitmap",
		CompatSparseSuper2: "sparse_super2", CompatFastCommit: "fast_commit",
		CompatStableInodes: "stable_inodes", CompatOrphanFile: "orphan_file",
	}
	incompatNames = map[uint32]string{
		IncompatCompression: "compression", IncompatFiletype: "filetype",
		IncompatRecover: "needs_recovery", IncompatJournalDev: "journal_dev",
		IncompatMetaBG: "meta_bg", IncompatExtents: "extent", Incompat64bit: "64bit",
		IncompatMMP: "mmp", IncompatFlexBG: "flex_bg", IncompatEAInode: "ea_inode",
		IncompatDirdata: "dirdata", IncompatCsumSeed: "metadata_csum_seed",
		IncompatLargedir: "large_dir", IncompatInlineData: "inline_data",
		IncompatEncrypt: "encrypt", IncompatCasefold: "casefold",
	}
	roCompatNames = map[uint32]string{
		RoCompatSparseSuper: "sparse_super", RoCompatLargeFile: "large_file",
		RoCompatBtreeDir: "btree_dir", RoCompatHugeFile: "huge_file",
		RoCompatGdtCsum: "uninit_bg", RoCompatDirNlink: "dir_nlink",
		RoCompatExtraIsize: "extra_isize", RoCompatHasSnapshot: "snapshot",
		RoCompatQuota: "quota", RoCompatBigalloc: "bigalloc",
		RoCompatMetadataCsum: "metadata_csum", RoCompatReplica: "replica",
		RoCompatReadonly: "read-only", RoCompatProject: "project",
		RoCompatSharedBlocks: "shared_blocks", RoCompatVerity: "verity",
		RoCompatOrphanPresent: "orphan_present",
	}
)

// incompatSupported lists the incompat features whose data this package
// shows exactly as the kernel does. Any other incompat bit refuses the
// filesystem: by definition of "incompat", a reader that ignores it shows
// wrong data.
const incompatSupported = IncompatFiletype | IncompatRecover | IncompatMetaBG |
	IncompatExtents | Incompat64bit | IncompatMMP | IncompatFlexBG |
	IncompatEAInode | IncompatCsumSeed | IncompatLargedir | IncompatInlineData

// Why each known-but-unsupported incompat feature is refused.
var incompatRefusals = map[uint32]string{
	IncompatCompression: "compressed files (an ext2 patch set never merged into Linux) cannot be read",
	IncompatJournalDev:  "this device is an external ext3/ext4 journal, not a filesystem; give the filesystem device instead",
	IncompatDirdata:     "directory entries carry Lustre data this reader cannot parse",
	IncompatEncrypt: "safefs does not read fscrypt-encrypted filesystems: without keys the kernel shows " +
		"encoded names and unreadable contents that safefs cannot reproduce; mount it with the kernel's ext4 if you trust the medium",
	IncompatCasefold: "case-insensitive directories need the kernel's Unicode case folding, which safefs " +
		"does not implement; mount it with the kernel's ext4 if you trust the medium",
}

func featureNames(word uint32, names map[uint32]string) []string {
	var out []string
	for word != 0 {
		bit := uint32(1) << bits.TrailingZeros32(word)
		word &^= bit
		if n, ok := names[bit]; ok {
			out = append(out, n)
		} else {
			out = append(out, fmt.Sprintf("0x%x", bit))
		}
	}
	return out
}

// FeatureNames lists every feature flag set in the superblock, by name,
// in the order compat, incompat, ro_compat. Unknown bits appear as hex.
func (sb *Superblock) FeatureNames() []string {
	var out []string
	out = append(out, featureNames(sb.FeatureCompat, compatNames)...)
	out = append(out, featureNames(sb.FeatureIncompat, incompatNames)...)
	out = append(out, featureNames(sb.FeatureRoCompat, roCompatNames)...)
	return out
}

// checkFeatures refuses filesystems whose incompat features this reader
// cannot honour, naming the first one found.
func (sb *Superblock) checkFeatures() error {
	unsupported := sb.FeatureIncompat &^ incompatSupported
	for unsupported != 0 {
		bit := uint32(1) << bits.TrailingZeros32(unsupported)
		unsupported &^= bit
		name, ok := incompatNames[bit]
		if !ok {
			return &FeatureError{Feature: fmt.Sprintf("incompat bit 0x%x", bit),
				Reason: "an unknown incompatible feature means this reader would show wrong data"}
		}
		return &FeatureError{Feature: name, Reason: incompatRefusals[bit]}
	}
	return nil
}

// HasCompat, HasIncompat and HasRoCompat report whether all the given bits
// are set.
func (sb *Superblock) HasCompat(f uint32) bool { return sb.FeatureCompat&f == f }

// HasIncompat reports whether all the given incompat bits are set.
func (sb *Superblock) HasIncompat(f uint32) bool { return sb.FeatureIncompat&f == f }

// HasRoCompat reports whether all the given ro_compat bits are set.
func (sb *Superblock) HasRoCompat(f uint32) bool { return sb.FeatureRoCompat&f == f }

// FeatureString is FeatureNames joined by spaces, as dumpe2fs prints it.
func (sb *Superblock) FeatureString() string { return strings.Join(sb.FeatureNames(), " ") }
