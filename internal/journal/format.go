package journal

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// On-disk constants of jbd2 (include/linux/jbd2.h). Every journal field is
// big-endian.
const (
	jbd2Magic = 0xC03B3998

	blockDescriptor = 1
	blockCommit     = 2
	blockSuperV1    = 3
	blockSuperV2    = 4
	blockRevoke     = 5

	tagFlagEscape   = 1
	tagFlagSameUUID = 2
	tagFlagLastTag  = 8

	headerSize       = 12 // journal_header_t
	tailSize         = 4  // struct jbd2_journal_block_tail
	revokeHeaderSize = 16 // jbd2_journal_revoke_header_t
	tagUUIDSize      = 16
	superblockSize   = 1024
	// commitHeaderSize is sizeof(struct commit_header) on 64-bit kernels:
	// 60 bytes of fields padded to the 8-byte alignment of h_commit_sec.
	// It matters only to jbd2_commit_block_csum_verify_partial.
	commitHeaderSize = 64

	crc32Chksum     = 1 // JBD2_CRC32_CHKSUM (commit blocks, checksum v1)
	crc32ChksumSize = 4
	crc32cChksum    = 4 // JBD2_CRC32C_CHKSUM (superblock s_checksum_type, v2/v3)

	minJournalBlocks     = 1024 // JBD2_MIN_JOURNAL_BLOCKS
	defaultFastCommitBlk = 256  // JBD2_DEFAULT_FAST_COMMIT_BLOCKS
)

// Journal feature flags.
const (
	// CompatChecksum is JBD2_FEATURE_COMPAT_CHECKSUM: checksum v1, a crc32
	// of each transaction's descriptor and data blocks in its commit block.
	CompatChecksum = 0x1

	// IncompatRevoke is JBD2_FEATURE_INCOMPAT_REVOKE: revoke blocks.
	IncompatRevoke = 0x1
	// Incompat64bit is JBD2_FEATURE_INCOMPAT_64BIT: tags hold 64-bit block
	// numbers and revoke records are 8 bytes.
	Incompat64bit = 0x2
	// IncompatAsyncCommit is JBD2_FEATURE_INCOMPAT_ASYNC_COMMIT: commit
	// blocks are written without waiting for the data blocks, so a bad
	// commit checksum ends the log instead of failing the mount.
	IncompatAsyncCommit = 0x4
	// IncompatCsumV2 is JBD2_FEATURE_INCOMPAT_CSUM_V2: crc32c of every log
	// block, 16 bits of it in each tag.
	IncompatCsumV2 = 0x8
	// IncompatCsumV3 is JBD2_FEATURE_INCOMPAT_CSUM_V3: as v2 with the whole
	// 32 bits in larger tags.
	IncompatCsumV3 = 0x10
	// IncompatFastCommit is JBD2_FEATURE_INCOMPAT_FAST_COMMIT: the last
	// s_num_fc_blks blocks of the journal hold ext4 fast commits.
	IncompatFastCommit = 0x20

	knownIncompat = IncompatRevoke | Incompat64bit | IncompatAsyncCommit |
		IncompatCsumV2 | IncompatCsumV3 | IncompatFastCommit
	knownRoCompat = 0
)

// Superblock is the journal superblock (journal_superblock_t) as jbd2 reads
// it when it loads a journal, plus the lengths derived from it.
type Superblock struct {
	// Version is 1 for JBD2_SUPERBLOCK_V1 (no features at all) or 2.
	Version   int
	BlockSize uint32 // s_blocksize
	MaxLen    uint32 // s_maxlen: blocks in the journal, fast-commit area included
	First     uint32 // s_first: the first block of the log
	Sequence  uint32 // s_sequence: the first transaction expected in the log
	Start     uint32 // s_start: where the log starts; 0 when nothing needs replay
	Errno     int32  // s_errno
	// Compat, Incompat and RoCompat are the feature words as stored; on a
	// version 1 superblock jbd2 treats them all as zero.
	Compat, Incompat, RoCompat uint32
	UUID                       [16]byte
	ChecksumType               uint8  // s_checksum_type
	NumFCBlocks                uint32 // s_num_fc_blks (0 means the default, 256)
	Head                       uint32 // s_head
	Checksum                   uint32 // s_checksum
}

// HasCompat reports whether a compat feature is on, as
// jbd2_has_feature_* does: never for a version 1 superblock.
func (s *Superblock) HasCompat(f uint32) bool { return s.Version >= 2 && s.Compat&f != 0 }

// HasIncompat reports whether an incompat feature is on (never for a
// version 1 superblock).
func (s *Superblock) HasIncompat(f uint32) bool { return s.Version >= 2 && s.Incompat&f != 0 }

// csumV2or3 is jbd2_journal_has_csum_v2or3.
func (s *Superblock) csumV2or3() bool { return s.HasIncompat(IncompatCsumV2 | IncompatCsumV3) }

// fastCommitBlocks is jbd2_journal_get_num_fc_blks.
func (s *Superblock) fastCommitBlocks() uint32 {
	if s.NumFCBlocks == 0 {
		return defaultFastCommitBlk
	}
	return s.NumFCBlocks
}

// tagBytes is journal_tag_bytes: 16 with csum v3; else 12 (8 without
// 64bit), plus 2 with csum v2.
func (s *Superblock) tagBytes() int {
	if s.HasIncompat(IncompatCsumV3) {
		return 16
	}
	sz := 12
	if s.HasIncompat(IncompatCsumV2) {
		sz += 2
	}
	if s.HasIncompat(Incompat64bit) {
		return sz
	}
	return sz - 4
}

var be = binary.BigEndian

// parseSuperblock decodes journal block 0 and applies
// journal_check_superblock (fs/jbd2/journal.c, Linux 6.18) for a journal
// of totalLen blocks (the journal inode's size in blocks) and the
// filesystem's block size.
func parseSuperblock(b []byte, blockSize, totalLen uint32) (*Superblock, error) {
	if len(b) < superblockSize {
		return nil, corruptf(BadJournalSuperblock, 0, "the journal superblock is %d bytes, want %d", len(b), superblockSize)
	}
	s := &Superblock{
		BlockSize:    be.Uint32(b[0x0C:]),
		MaxLen:       be.Uint32(b[0x10:]),
		First:        be.Uint32(b[0x14:]),
		Sequence:     be.Uint32(b[0x18:]),
		Start:        be.Uint32(b[0x1C:]),
		Errno:        int32(be.Uint32(b[0x20:])),
		Compat:       be.Uint32(b[0x24:]),
		Incompat:     be.Uint32(b[0x28:]),
		RoCompat:     be.Uint32(b[0x2C:]),
		ChecksumType: b[0x50],
		NumFCBlocks:  be.Uint32(b[0x54:]),
		Head:         be.Uint32(b[0x58:]),
		Checksum:     be.Uint32(b[0xFC:]),
	}
	copy(s.UUID[:], b[0x30:0x40])
	bad := func(format string, args ...any) (*Superblock, error) {
		return nil, corruptf(BadJournalSuperblock, 0, format, args...)
	}
	if be.Uint32(b[0:]) != jbd2Magic || s.BlockSize != blockSize {
		return bad("no valid journal superblock (magic 0x%08x, block size %d; want 0x%08x and the filesystem's %d)",
			be.Uint32(b[0:]), s.BlockSize, uint32(jbd2Magic), blockSize)
	}
	switch be.Uint32(b[4:]) {
	case blockSuperV1:
		s.Version = 1
	case blockSuperV2:
		s.Version = 2
	default:
		return bad("unrecognised superblock format %d", be.Uint32(b[4:]))
	}
	if s.MaxLen > totalLen {
		return bad("the journal is %d blocks but its inode holds only %d (journal file too short)", s.MaxLen, totalLen)
	}
	if s.First == 0 || s.First >= totalLen {
		return bad("invalid start block of the log %d (journal of %d blocks)", s.First, totalLen)
	}
	if s.Version == 1 {
		return s, nil
	}
	if s.RoCompat&^knownRoCompat != 0 || s.Incompat&^knownIncompat != 0 {
		feat := s.Incompat &^ knownIncompat
		word := "incompat"
		if feat == 0 {
			feat, word = s.RoCompat&^knownRoCompat, "ro_compat"
		}
		return nil, &FeatureError{Feature: fmt.Sprintf("journal %s bit 0x%x", word, feat&-feat),
			Reason: "the journal uses a feature unknown to Linux 6.18's jbd2, which refuses such journals"}
	}
	var fc uint32
	if s.HasIncompat(IncompatFastCommit) {
		fc = s.fastCommitBlocks()
	}
	if s.MaxLen < minJournalBlocks || s.MaxLen-minJournalBlocks < fc {
		return bad("journal too short: %d blocks with %d fast-commit blocks, jbd2 wants at least %d for the log", s.MaxLen, fc, minJournalBlocks)
	}
	if s.HasIncompat(IncompatCsumV2) && s.HasIncompat(IncompatCsumV3) {
		return bad("checksum v2 and v3 are both on")
	}
	if s.csumV2or3() && s.HasCompat(CompatChecksum) {
		return bad("checksum v1 and v2/v3 are both on")
	}
	if s.csumV2or3() {
		if s.ChecksumType != crc32cChksum {
			return bad("unknown checksum type %d", s.ChecksumType)
		}
		var sb [superblockSize]byte
		copy(sb[:], b[:superblockSize])
		be.PutUint32(sb[0xFC:], 0)
		if got := crc32c(^uint32(0), sb[:]); got != s.Checksum {
			return nil, badCsumf(BadJournalSuperblock, 0, "journal superblock checksum mismatch (stored 0x%08x, computed 0x%08x)", s.Checksum, got)
		}
	}
	return s, nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32c is the kernel's crc32c(seed, data), which neither inverts on the
// way in nor on the way out (jbd2_chksum); Go's crc32.Update does both.
func crc32c(seed uint32, p []byte) uint32 { return ^crc32.Update(^seed, castagnoli, p) }

// crc32BETable is the MSB-first table of the CRC-32 polynomial 0x04C11DB7
// for crc32_be (lib/crc32.c), which checksum v1 commit blocks use.
var crc32BETable = func() (t [256]uint32) {
	for i := range t {
		c := uint32(i) << 24
		for j := 0; j < 8; j++ {
			if c&0x80000000 != 0 {
				c = c<<1 ^ 0x04C11DB7
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return
}()

// crc32BE is the kernel's crc32_be(crc, p, len): no reflection, no final
// inversion.
func crc32BE(crc uint32, p []byte) uint32 {
	for _, b := range p {
		crc = crc<<8 ^ crc32BETable[byte(crc>>24)^b]
	}
	return crc
}

// tidGT and tidGEQ compare transaction IDs modulo 2^32 (tid_gt, tid_geq).
func tidGT(x, y uint32) bool  { return int32(x-y) > 0 }
func tidGEQ(x, y uint32) bool { return int32(x-y) >= 0 }
