package journal

import (
	"encoding/binary"
	"fmt"
	"io"

	"safefs/internal/ext4"
)

// The passes of jbd2 recovery (enum passtype).
type pass int

const (
	passScan pass = iota
	passRevoke
	passReplay
)

func (p pass) String() string {
	return [...]string{"PASS_SCAN", "PASS_REVOKE", "PASS_REPLAY"}[p]
}

// revokeState is one entry of the revoke table: the newest transaction that
// revoked the block, if any.
type revokeState struct {
	seq     uint32
	revoked bool
}

// recovery carries what struct recovery_info carries between passes, plus
// the replayed blocks.
type recovery struct {
	j *journal

	startTransaction uint32 // info->start_transaction
	endTransaction   uint32 // info->end_transaction (0 means "not yet known", as in C)
	failedCommit     uint32 // journal->j_failed_commit
	failedPos        int64  // where the commit block that failed its checksum is
	nrReplays        int
	nrRevokes        int
	nrRevokeHits     int
	escaped          int

	// revokes is the revoke table, restricted to the blocks that some
	// descriptor tag in the log targets: only those are ever looked up,
	// so only those need remembering, however many records the log has.
	revokes map[uint64]revokeState
	// written indexes blocks by target: the last version wins, as the
	// last write to a buffer does.
	written map[uint64]int
	blocks  []Block

	// budget is what is left of the log positions one pass may consume
	// (see consume); limit is that budget's size.
	budget, limit uint64

	hdr, data []byte // block buffers
}

// consume charges n log positions to the current pass. jbd2 itself has no
// such bound: a log whose blocks all carry the expected sequence number and
// no commit makes it loop forever, and crafted descriptors can make it
// replay the same log blocks again and again. A log written by jbd2 never
// spans more than the journal, so twice the journal's length is a bound no
// real log reaches.
func (r *recovery) consume(n uint64, pos uint64) error {
	if n > r.budget {
		return corruptf(BadLog, int64(pos), "the log runs on for more than %d blocks, twice the journal's length (a log that never ends, or descriptors that replay the log over itself)", r.limit)
	}
	r.budget -= n
	return nil
}

// advance moves a log position on by n blocks, wrapping at the end of the
// log, and charges them to the pass.
func (r *recovery) advance(pos *uint64, n uint64) error {
	if err := r.consume(n, *pos); err != nil {
		return err
	}
	*pos = r.j.wrap(*pos + n)
	return nil
}

// descriptorCsumVerify is jbd2_descriptor_block_csum_verify (descriptor and
// revoke blocks): crc32c of the block with its tail checksum zeroed.
func (r *recovery) descriptorCsumVerify(b []byte) bool {
	if !r.j.sb.csumV2or3() {
		return true
	}
	n := len(b) - tailSize
	provided := be.Uint32(b[n:])
	c := crc32c(r.j.csumSeed, b[:n])
	c = crc32c(c, []byte{0, 0, 0, 0})
	return c == provided
}

// commitCsumVerify is jbd2_commit_block_csum_verify: crc32c of the commit
// block with h_chksum[0] zeroed.
func (r *recovery) commitCsumVerify(b []byte) bool {
	if !r.j.sb.csumV2or3() {
		return true
	}
	provided := be.Uint32(b[16:])
	c := crc32c(r.j.csumSeed, b[:16])
	c = crc32c(c, []byte{0, 0, 0, 0})
	c = crc32c(c, b[20:])
	return c == provided
}

// commitCsumVerifyPartial is jbd2_commit_block_csum_verify_partial: the
// same checksum over the commit header followed by zeros, which is what a
// commit block looks like whose tail was never written.
func (r *recovery) commitCsumVerifyPartial(b []byte) bool {
	tmp := make([]byte, len(b))
	copy(tmp, b[:commitHeaderSize])
	provided := be.Uint32(tmp[16:])
	be.PutUint32(tmp[16:], 0)
	return crc32c(r.j.csumSeed, tmp) == provided
}

// tagCsumVerify is jbd2_block_tag_csum_verify: crc32c seeded with the
// transaction ID over the journaled block as stored (still escaped), all 32
// bits in a v3 tag, the low 16 in a v2 tag.
func (r *recovery) tagCsumVerify(tag, data []byte, seq uint32) bool {
	if !r.j.sb.csumV2or3() {
		return true
	}
	var s [4]byte
	be.PutUint32(s[:], seq)
	c := crc32c(r.j.csumSeed, s[:])
	c = crc32c(c, data)
	if r.j.sb.HasIncompat(IncompatCsumV3) {
		return be.Uint32(tag[12:]) == c
	}
	return be.Uint16(tag[4:]) == uint16(c)
}

// tagsEnd is where the tags of a descriptor block must end: before the
// checksum tail when there is one.
func (r *recovery) tagsEnd() int {
	if r.j.sb.csumV2or3() {
		return int(r.j.bs) - tailSize
	}
	return int(r.j.bs)
}

// forEachTag walks the tags of a descriptor block as count_tags and
// jbd2_do_replay do, stopping after fn returns false.
func (r *recovery) forEachTag(b []byte, fn func(tag []byte, flags uint16) bool) {
	end := r.tagsEnd()
	tb := r.j.tagBytes
	for off := headerSize; off+tb <= end; {
		tag := b[off : off+tb]
		flags := be.Uint16(tag[6:])
		if !fn(tag, flags) {
			return
		}
		off += tb
		if flags&tagFlagSameUUID == 0 {
			off += tagUUIDSize
		}
		if flags&tagFlagLastTag != 0 {
			return
		}
	}
}

// countTags is count_tags.
func (r *recovery) countTags(b []byte) uint64 {
	var n uint64
	r.forEachTag(b, func([]byte, uint16) bool { n++; return true })
	return n
}

// tagBlock is read_tag_block.
func (r *recovery) tagBlock(tag []byte) uint64 {
	b := uint64(be.Uint32(tag[0:]))
	if r.j.sb.HasIncompat(Incompat64bit) {
		b |= uint64(be.Uint32(tag[8:])) << 32
	}
	return b
}

// noteTargets enters the targets of a descriptor's tags in the revoke
// table, during PASS_SCAN, so that PASS_REVOKE knows which revoke records
// can matter.
func (r *recovery) noteTargets(b []byte) {
	r.forEachTag(b, func(tag []byte, _ uint16) bool {
		t := r.tagBlock(tag)
		if _, ok := r.revokes[t]; !ok {
			r.revokes[t] = revokeState{}
		}
		return true
	})
}

// calcChksums is calc_chksums: the checksum v1 crc32 of a descriptor block
// and the blocks it describes. A block it cannot read ends it early, and
// the log walk goes on from there (the kernel's "break" out of the switch);
// the only error it returns is the pass's budget running out.
func (r *recovery) calcChksums(b []byte, next *uint64, sum *uint32) error {
	n := r.countTags(b)
	*sum = crc32BE(*sum, b)
	for i := uint64(0); i < n; i++ {
		ioBlock := *next
		if err := r.advance(next, 1); err != nil {
			return err
		}
		if _, err := r.j.read(ioBlock, r.data); err != nil {
			return nil
		}
		*sum = crc32BE(*sum, r.data)
	}
	return nil
}

// doReplay is jbd2_do_replay: every tag of a descriptor in a committed
// transaction is a block to write, unless revoked by this or a later
// transaction or failing its checksum. Errors reading log blocks or
// checksum failures do not stop it (the kernel recovers what it can and
// reports the failure at the end); they are returned after the whole
// descriptor is done.
func (r *recovery) doReplay(b []byte, next *uint64, seq uint32) (softErr, hardErr error) {
	r.forEachTag(b, func(tag []byte, flags uint16) bool {
		ioBlock := *next
		if hardErr = r.advance(next, 1); hardErr != nil {
			return false
		}
		// Without checksums the data is not looked at until the overlay
		// serves it, so only its place is needed now: a journal of
		// ext3 size is not read twice at mount time. (A read error then
		// shows when the block is read, rather than failing the replay
		// as in the kernel: either way nothing wrong is shown.)
		var phys uint64
		var err error
		if r.j.sb.csumV2or3() {
			phys, err = r.j.read(ioBlock, r.data)
		} else {
			phys, err = r.j.locate(ioBlock)
		}
		if err != nil {
			softErr = err
			return true
		}
		target := r.tagBlock(tag)
		if rs, ok := r.revokes[target]; !ok {
			// PASS_SCAN noted every target; the journal changed
			// under us between two readings.
			hardErr = corruptf(BadLog, int64(ioBlock), "a descriptor changed between recovery passes (block %d was not in the log before)", target)
			return false
		} else if rs.revoked && !tidGT(seq, rs.seq) {
			r.nrRevokeHits++
			return true
		}
		if !r.tagCsumVerify(tag, r.data, seq) {
			softErr = badCsumf(BadDataBlock, int64(ioBlock), "invalid checksum recovering data block %d in transaction %d (the kernel replays the rest and refuses the mount)", target, seq)
			return true
		}
		if target >= r.j.maxTarget || r.j.inJournal(target) {
			// jbd2 writes through the buffer cache, so a tag that
			// targets the journal changes what later reads of the log
			// see; jbd2 never logs its own blocks.
			hardErr = corruptf(BadDescriptor, int64(ioBlock), "transaction %d writes block %d, which lies inside the journal or beyond any device", seq, target)
			return false
		}
		esc := flags&tagFlagEscape != 0
		if esc {
			r.escaped++
		}
		blk := Block{Target: target, Source: phys, Escaped: esc, TID: seq}
		if i, ok := r.written[target]; ok {
			r.blocks[i] = blk
		} else {
			r.written[target] = len(r.blocks)
			r.blocks = append(r.blocks, blk)
		}
		r.nrReplays++
		return true
	})
	return softErr, hardErr
}

// scanRevokeRecords is scan_revoke_records. PASS_SCAN only checks r_count
// (and counts); PASS_REVOKE records, for each block, the newest
// transaction that revoked it.
func (r *recovery) scanRevokeRecords(p pass, b []byte, seq uint32, pos uint64) error {
	rcount := be.Uint32(b[12:])
	csumSize := uint32(0)
	if r.j.sb.csumV2or3() {
		csumSize = tailSize
	}
	if rcount > r.j.bs-csumSize {
		return corruptf(BadRevoke, int64(pos), "r_count %d overruns the %d-byte revoke block (the kernel fails recovery with EINVAL)", rcount, r.j.bs-csumSize)
	}
	recLen := 4
	if r.j.sb.HasIncompat(Incompat64bit) {
		recLen = 8
	}
	if p == passScan {
		return nil
	}
	for off := revokeHeaderSize; off+recLen <= int(rcount); off += recLen {
		var blk uint64
		if recLen == 4 {
			blk = uint64(be.Uint32(b[off:]))
		} else {
			blk = be.Uint64(b[off:])
		}
		r.nrRevokes++
		// jbd2_journal_set_revoke keeps the newest sequence per block.
		if rs, ok := r.revokes[blk]; ok && (!rs.revoked || tidGT(seq, rs.seq)) {
			r.revokes[blk] = revokeState{seq: seq, revoked: true}
		}
	}
	return nil
}

// doOnePass is do_one_pass (fs/jbd2/recovery.c, Linux 6.18). It walks the
// log from s_start, transaction by transaction. PASS_SCAN finds where the
// log ends (end_transaction) and checks checksums; PASS_REVOKE builds the
// revoke table; PASS_REPLAY collects the blocks to write. A hard error ends
// the pass at once ("goto failed"); a soft one (from replaying a
// descriptor) lets it finish and is returned at the end.
func (r *recovery) doOnePass(p pass) error {
	j := r.j
	nextCommitID := j.sb.Sequence
	nextLogBlock := uint64(j.sb.Start)
	if p == passScan {
		r.startTransaction = nextCommitID
	}
	r.budget = r.limit
	var success error
	crc32Sum := ^uint32(0)
	needCheckCommitTime := false
	// The first descriptor or revoke block that failed its checksum, to
	// name it if the commit block then shows it is not stale.
	badPos, badKind := int64(-1), BadDescriptor
	noteBad := func(pos uint64, kind Corruption) {
		if !needCheckCommitTime {
			badPos, badKind = int64(pos), kind
		}
		needCheckCommitTime = true
	}
	var lastTransCommitTime, commitTime uint64
	b := r.hdr

loop:
	for {
		if p != passScan && tidGEQ(nextCommitID, r.endTransaction) {
			break
		}
		pos := nextLogBlock
		if _, err := j.read(pos, b); err != nil {
			return err
		}
		if err := r.advance(&nextLogBlock, 1); err != nil {
			return err
		}
		if be.Uint32(b[0:]) != jbd2Magic {
			break
		}
		blocktype := be.Uint32(b[4:])
		sequence := be.Uint32(b[8:])
		if sequence != nextCommitID {
			break
		}

		switch blocktype {
		case blockDescriptor:
			if !r.descriptorCsumVerify(b) {
				// PASS_SCAN can see stale blocks due to lazy journal
				// init; the commit block decides.
				if p != passScan {
					return badCsumf(BadDescriptor, int64(pos), "invalid descriptor checksum in transaction %d", sequence)
				}
				noteBad(pos, BadDescriptor)
			}
			if p == passScan {
				r.noteTargets(b)
			}
			if p != passReplay {
				if p == passScan && j.sb.HasCompat(CompatChecksum) && r.endTransaction == 0 {
					if err := r.calcChksums(b, &nextLogBlock, &crc32Sum); err != nil {
						return err
					}
					continue
				}
				if err := r.advance(&nextLogBlock, r.countTags(b)); err != nil {
					return err
				}
				continue
			}
			soft, hard := r.doReplay(b, &nextLogBlock, nextCommitID)
			if hard != nil {
				return hard
			}
			if soft != nil {
				success = soft
			}
			continue

		case blockCommit:
			if p != passScan {
				nextCommitID++
				continue
			}
			commitTime = be.Uint64(b[0x30:])
			if needCheckCommitTime {
				// A descriptor or revoke block failed its checksum.
				// If commit times still increase, it is this
				// journal's transaction, damaged: recovery fails.
				// Otherwise it is a stale block and the log ends.
				if commitTime >= lastTransCommitTime {
					return badCsumf(badKind, badPos, "invalid checksum in transaction %d, which its commit block (journal block %d) shows is not stale (the kernel fails recovery)", nextCommitID, pos)
				}
				break loop
			}
			chksumError := false
			if j.sb.HasCompat(CompatChecksum) {
				found := be.Uint32(b[16:])
				if r.endTransaction != 0 {
					r.failedCommit = r.endTransaction
					continue
				}
				typ, size := b[12], b[13]
				if !((crc32Sum == found && typ == crc32Chksum && size == crc32ChksumSize) ||
					(typ == 0 && size == 0 && found == 0)) {
					chksumError = true
				} else {
					crc32Sum = ^uint32(0)
				}
			} else if !r.commitCsumVerify(b) && !r.commitCsumVerifyPartial(b) {
				chksumError = true
			}
			if chksumError {
				if commitTime < lastTransCommitTime {
					// Older than the previous commit: a stale block.
					break loop
				}
				r.endTransaction = nextCommitID
				r.failedPos = int64(pos)
				if !j.sb.HasIncompat(IncompatAsyncCommit) {
					r.failedCommit = nextCommitID
					continue
				}
			}
			lastTransCommitTime = commitTime
			nextCommitID++
			continue

		case blockRevoke:
			if p != passRevoke && p != passScan {
				continue
			}
			if p == passScan && !r.descriptorCsumVerify(b) {
				noteBad(pos, BadRevoke)
			}
			if err := r.scanRevokeRecords(p, b, nextCommitID, pos); err != nil {
				return err
			}
			continue

		default:
			break loop
		}
	}

	// done:
	if p == passScan {
		if r.endTransaction == 0 {
			r.endTransaction = nextCommitID
		}
	} else if r.endTransaction != nextCommitID {
		// Different passes ending at different places: the log changed
		// between readings.
		if success == nil {
			success = corruptf(BadLog, int64(nextLogBlock), "recovery %s ended at transaction %d, expected %d", p, nextCommitID, r.endTransaction)
		}
	}
	if j.sb.HasIncompat(IncompatFastCommit) && p == passScan {
		if err := r.checkFastCommit(); err != nil {
			return err
		}
	}
	return success
}

// ext4 fast-commit tags (fs/ext4/fast_commit.h).
const (
	fcTagHead     = 0x0009
	fcTagBaseLen  = 4 // struct ext4_fc_tl
	fcHeadLen     = 8 // struct ext4_fc_head
	fcSupportedFe = 0 // EXT4_FC_SUPPORTED_FEATURES
)

// checkFastCommit decides what fc_do_one_pass with ext4's replay callback
// (ext4_fc_replay_scan, Linux 6.18) would do with the fast-commit area after
// PASS_SCAN. Fast commits belong to the transaction after the last full
// commit; the kernel replays them only if the area's first tag is a head
// tag for exactly that transaction. Anything else stops the scan at once
// with nothing to replay, except the malformed heads on which the kernel
// fails recovery. A head for that transaction means ext4 would apply its
// records (or fail on them), which this package does not implement, so the
// filesystem is refused.
func (r *recovery) checkFastCommit() error {
	j := r.j
	if j.fcFirst > j.fcLast {
		return nil
	}
	b := r.data
	if _, err := j.read(j.fcFirst, b); err != nil {
		return err
	}
	le := binary.LittleEndian
	if le.Uint16(b[0:]) != fcTagHead {
		return nil
	}
	length := int(le.Uint16(b[2:]))
	if length > len(b)-fcTagBaseLen || length != fcHeadLen {
		return corruptf(BadFastCommit, int64(j.fcFirst), "the fast-commit head tag is %d bytes, want %d (the kernel fails recovery)", length, fcHeadLen)
	}
	features := le.Uint32(b[fcTagBaseLen:])
	tid := le.Uint32(b[fcTagBaseLen+4:])
	if features&^fcSupportedFe != 0 {
		return &FeatureError{Feature: fmt.Sprintf("fast-commit feature 0x%x", features),
			Reason: "the fast-commit area uses features unknown to Linux 6.18, which fails recovery"}
	}
	if tid != r.endTransaction {
		return nil
	}
	return &FeatureError{Feature: "fast_commit",
		Reason: fmt.Sprintf("the journal holds fast commits for transaction %d, which the kernel's ext4 replays "+
			"after the journal (ext4_fc_replay) and safefs does not; mount it with the kernel's ext4 or run e2fsck", tid)}
}

// recoverJournal is jbd2_journal_recover followed by the checks of
// jbd2_journal_load: the three passes, then a failed commit or a journal
// too short to restart are errors, after the replay.
func recoverJournal(j *journal) (*Result, error) {
	res := &Result{BlockSize: j.bs, Journal: *j.sb}
	if j.sb.Start == 0 {
		// Cleanly unmounted journal: nothing to do.
		res.FirstTID, res.EndTID = j.sb.Sequence, j.sb.Sequence
		return res, nil
	}
	r := &recovery{
		j:         j,
		failedPos: -1,
		revokes:   map[uint64]revokeState{},
		written:   map[uint64]int{},
		limit:     2 * j.totalLen,
		hdr:       make([]byte, j.bs),
		data:      make([]byte, j.bs),
	}
	err := r.doOnePass(passScan)
	if err == nil {
		err = r.doOnePass(passRevoke)
	}
	replayed := false
	if err == nil {
		replayed = true
		err = r.doOnePass(passReplay)
	}
	res.FirstTID, res.EndTID = r.startTransaction, r.endTransaction
	res.Replays, res.Revokes, res.RevokeHits, res.Escaped = r.nrReplays, r.nrRevokes, r.nrRevokeHits, r.escaped
	res.Blocks = r.blocks
	res.sortBlocks()
	if !replayed {
		return nil, err
	}
	if err != nil {
		return res, err
	}
	if r.failedCommit != 0 {
		return res, badCsumf(BadCommit, r.failedPos, "journal transaction %d is corrupt: its commit block fails its checksum "+
			"(the kernel replays the transactions before it and refuses the mount)", r.failedCommit)
	}
	if uint64(j.sb.First)+minJournalBlocks > uint64(j.sb.MaxLen)+1 {
		// journal_reset, after the replay.
		return res, corruptf(BadJournalSuperblock, 0, "journal too short (blocks %d-%d) to restart after the replay", j.sb.First, j.sb.MaxLen)
	}
	return res, nil
}

// Recover finds what the kernel's jbd2 recovery would write to dev when
// mounting the filesystem fsys, which the caller opened on dev with
// ext4.Options.NoRecovery (fsys maps the journal inode's blocks, dev is
// where the journal is read: they must be the same device). It writes
// nothing, and reads the journal inode and journal from the device as it
// stands, as the kernel does before it replays anything.
//
// The result is empty (no blocks, no error) when the filesystem does not
// need recovery: then the kernel ignores the journal's contents, and so
// does Recover, without reading them. Otherwise:
//
//   - A journal on an external device is a *ExternalJournalError.
//   - A journal inode or journal superblock the kernel would not load, a
//     journal feature it does not know, or fast commits to replay (see
//     the package documentation) are errors, with a nil Result.
//   - A log the kernel would fail to scan (a descriptor or revoke block
//     failing its checksum inside the log, an overlong revoke count, a log
//     position past the journal) is an error with a nil Result: the kernel
//     writes nothing and refuses the mount.
//   - A commit block failing its checksum (without async_commit) ends the
//     log before its transaction, and a journaled block failing its tag
//     checksum is skipped; in both cases the kernel writes the rest and then
//     refuses the mount. Recover returns that Result together with a
//     *CorruptError (Kind BadCommit or BadDataBlock): a caller that mirrors
//     the kernel refuses, a salvage tool may look. So it does for a version
//     1 journal superblock on a 64bit or metadata_csum filesystem, which
//     ext4 refuses after the replay, and for a log block that cannot be
//     read while replaying.
//   - With async_commit, a commit block failing its checksum just ends the
//     log (checksums v2 and v3; with v1 the next commit block makes it a
//     failed commit as above).
//
// Recover refuses (as *CorruptError) a few journals the kernel would
// accept, none of which jbd2 writes: a log that runs on for more than twice
// the journal's length (the kernel may loop forever or replay the log over
// itself), a tag that targets the journal's own blocks (the kernel would
// then read its own writes back as log), a journal inode in more than
// 131,072 pieces, and a log start past the end of a log followed by a
// fast-commit area. Holes in the journal inode are corruption when the
// replay reads them (the kernel would read the device block with the hole's
// logical number).
//
// The checks and passes follow Linux 6.18 (fs/ext4/super.c
// ext4_load_journal and ext4_load_and_init_journal, fs/jbd2/journal.c,
// fs/jbd2/recovery.c). e2fsprogs 1.47.0 (debugfs journal_run, e2fsck)
// replays differently in corrupt cases, and the tests follow the kernel
// there: it replays the corpus image j_corrupt_revoke_block (a revoke block
// whose r_count overruns it) where the kernel fails recovery; it rejects a
// commit block whose checksum covers only its header, which the kernel
// accepts; and it carries on after a failed commit, which the kernel
// replays up to and then refuses to mount.
func Recover(dev io.ReaderAt, fsys *ext4.FS) (*Result, error) {
	sb := fsys.Superblock()
	empty := &Result{BlockSize: fsys.BlockSize()}
	if !sb.NeedsRecovery() {
		return empty, nil
	}
	if !sb.HasCompat(ext4.CompatHasJournal) {
		// No journal to load: the kernel mounts in no-journal mode and
		// replays nothing.
		return empty, nil
	}
	switch {
	case sb.JournalInum != 0 && sb.JournalDev != 0:
		return nil, corruptf(BadJournalInode, -1, "the filesystem names both a journal inode (%d) and a journal device (0x%x)", sb.JournalInum, sb.JournalDev)
	case sb.JournalInum == 0:
		return nil, &ExternalJournalError{Dev: sb.JournalDev, UUID: sb.JournalUUID}
	}
	j, err := openJournal(dev, fsys, sb.JournalInum)
	if err != nil {
		return nil, err
	}
	res, err := recoverJournal(j)
	if err == nil && j.sb.Version == 1 && (sb.HasIncompat(ext4.Incompat64bit) || sb.HasMetadataCsum()) {
		// ext4_load_and_init_journal, after the replay: a version 1
		// journal cannot take the 64bit or checksum features the
		// filesystem needs, and ext4 refuses the mount.
		err = corruptf(BadJournalSuperblock, 0, "the journal superblock is version 1, which cannot carry the 64bit or "+
			"checksum features this filesystem needs (the kernel replays it, then refuses the mount)")
	}
	return res, err
}
