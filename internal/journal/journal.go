package journal

import (
	"errors"
	"fmt"
	"io"
	"math"
	"sort"

	"safefs/internal/ext4"
)

// jrun is a stretch of the journal inode's logical blocks with one kind of
// backing: mapped to device blocks from phys on, a hole, or unmappable
// (err says why).
type jrun struct {
	logical, phys, length uint64
	hole                  bool
	err                   error
}

// journal is an open internal journal: where its blocks live and what its
// superblock says, with jbd2's derived limits (j_total_len, j_first,
// j_last, j_fc_first, j_fc_last).
type journal struct {
	dev       io.ReaderAt
	bs        uint32
	sb        *Superblock
	totalLen  uint64 // j_total_len: the journal inode's blocks, at most s_maxlen
	first     uint64 // j_first
	last      uint64 // j_last (one past the log's last block)
	fcFirst   uint64 // j_fc_first (fast commit only)
	fcLast    uint64 // j_fc_last (fast commit only)
	runs      []jrun // by logical block, covering [0, inode blocks)
	byPhys    []jrun // the mapped runs, by device block
	csumSeed  uint32 // j_csum_seed
	tagBytes  int
	maxTarget uint64 // targets must stay below this for offsets to fit an int64
}

// readJournalInode reads the journal inode ino through internal/ext4
// (range, checksum, i_extra_isize) and makes the checks
// ext4_get_journal_inode adds: in use, a regular unencrypted file, a sane
// size.
func readJournalInode(fsys *ext4.FS, ino uint32) (*ext4.Inode, error) {
	bad := func(format string, args ...any) error {
		return corruptf(BadJournalInode, -1, "journal inode %d: "+format, append([]any{ino}, args...)...)
	}
	in, err := fsys.JournalInode()
	if err != nil {
		return nil, &CorruptError{Kind: BadJournalInode, Block: -1, Detail: fmt.Sprintf("journal inode %d", ino), Err: err}
	}
	if in.LinksCount == 0 {
		return nil, bad("the journal inode is deleted (link count 0)")
	}
	if in.Type() != ext4.ModeRegular || in.Flags&ext4.FlagEncrypt != 0 {
		return nil, bad("invalid journal inode (mode 0%o, flags 0x%x): not a regular, unencrypted file", in.Mode, in.Flags)
	}
	if int64(in.Size) < 0 {
		return nil, bad("size %d is negative", int64(in.Size))
	}
	return in, nil
}

// maxRuns bounds the pieces the journal inode may come in. mke2fs and
// tune2fs allocate journals in a few extents (an indirect-mapped journal
// breaks at each pointer block, every 1024 blocks with 4 KiB blocks); a
// journal in more pieces than this is refused rather than mapped at a cost
// the image chooses.
const maxRuns = 1 << 17

// mapJournal records where each of the journal inode's logical blocks in
// [from, n) lives, appending to runs. A block that cannot be mapped is
// recorded with its error and reported only if the replay reads it, as the
// kernel maps each block when it reads it.
func mapJournal(fsys *ext4.FS, in *ext4.Inode, runs []jrun, from, n uint64) ([]jrun, error) {
	for l := from; l < n; {
		if len(runs) >= maxRuns {
			return nil, corruptf(BadJournalInode, int64(l), "the journal inode comes in more than %d pieces", maxRuns)
		}
		ext, err := fsys.MapBlock(in, l)
		if err != nil {
			runs = append(runs, jrun{logical: l, length: 1, err: err})
			l++
			continue
		}
		// MapBlock returns the run that contains l; start it at l.
		if ext.Logical > l || ext.Len == 0 || ext.Logical+ext.Len <= l {
			runs = append(runs, jrun{logical: l, length: 1, err: fmt.Errorf("block map answered %+v for logical block %d", ext, l)})
			l++
			continue
		}
		skip := l - ext.Logical
		length := min(ext.Len-skip, n-l)
		r := jrun{logical: l, length: length}
		switch ext.Kind {
		case ext4.Mapped, ext4.Unwritten:
			// ext4_map_blocks maps unwritten extents too; jbd2 reads
			// the block either way.
			r.phys = ext.Physical + skip
		case ext4.Hole:
			r.hole = true
		default:
			r.err = fmt.Errorf("the journal inode's data is %s", ext.Kind)
		}
		runs = append(runs, r)
		l += length
	}
	return runs, nil
}

// openJournal loads the internal journal of fsys: the journal inode, its
// block map and the journal superblock, with the checks of ext4's
// ext4_get_journal_inode and jbd2's jbd2_journal_init_inode and
// journal_load_superblock.
func openJournal(dev io.ReaderAt, fsys *ext4.FS, ino uint32) (*journal, error) {
	in, err := readJournalInode(fsys, ino)
	if err != nil {
		return nil, err
	}
	bs := fsys.BlockSize()
	sb := fsys.Superblock()
	// jbd2_journal_init_inode passes i_size >> blkbits as an int, which
	// j_total_len (unsigned int) keeps the low 32 bits of.
	inodeBlocks := uint64(uint32(in.Size >> (10 + sb.LogBlockSize)))
	j := &journal{dev: dev, bs: bs}
	j.maxTarget = uint64(math.MaxInt64) / uint64(bs)
	// The superblock is logical block 0 whatever the journal's length
	// (jbd2_journal_init_inode maps it first); the rest is mapped once the
	// superblock says how long the journal is, since nothing past that is
	// ever read.
	runs, err := mapJournal(fsys, in, nil, 0, 1)
	if err != nil {
		return nil, err
	}
	r := runs[0]
	if r.err != nil || r.hole || r.phys == 0 {
		e := corruptf(BadJournalInode, 0, "cannot locate the journal superblock (logical block 0 of inode %d)", ino)
		e.Err = r.err
		return nil, e
	}
	buf := make([]byte, bs)
	if err := readFull(dev, buf, int64(r.phys)*int64(bs)); err != nil {
		return nil, err
	}
	jsb, err := parseSuperblock(buf, bs, uint32(inodeBlocks))
	if err != nil {
		return nil, err
	}
	if uint64(jsb.MaxLen) > sb.BlocksCount {
		// jbd2 does not check this, but no journal can be larger than
		// the filesystem holding it: a journal inode mapping 2^32 blocks
		// onto the same few device blocks would make each pass of the
		// recovery read for minutes, or hours, before the mount.
		return nil, corruptf(BadJournalSuperblock, 0, "the journal is %d blocks long, more than the whole filesystem (%d blocks)", jsb.MaxLen, sb.BlocksCount)
	}
	j.sb = jsb
	j.totalLen = min(inodeBlocks, uint64(jsb.MaxLen))
	if j.runs, err = mapJournal(fsys, in, runs, r.length, j.totalLen); err != nil {
		return nil, err
	}
	j.first = uint64(jsb.First)
	j.last = uint64(jsb.MaxLen)
	if jsb.HasIncompat(IncompatFastCommit) {
		j.fcLast = uint64(jsb.MaxLen)
		j.last = j.fcLast - uint64(jsb.fastCommitBlocks())
		j.fcFirst = j.last + 1
	}
	if j.first >= j.last {
		// The kernel accepts s_first beyond the end of the log proper
		// when a fast-commit area follows, and then computes positions
		// with an unsigned underflow; no mkfs or jbd2 writes that.
		return nil, corruptf(BadJournalSuperblock, 0, "the log starts at block %d, past its end at %d", j.first, j.last)
	}
	if jsb.csumV2or3() {
		j.csumSeed = crc32c(^uint32(0), jsb.UUID[:])
	}
	j.tagBytes = jsb.tagBytes()
	for _, r := range j.runs {
		if r.err == nil && !r.hole {
			j.byPhys = append(j.byPhys, r)
		}
	}
	sort.Slice(j.byPhys, func(a, b int) bool { return j.byPhys[a].phys < j.byPhys[b].phys })
	return j, nil
}

// locate returns the device block holding journal block pos, as jread
// (fs/jbd2/recovery.c) finds it: beyond the journal is corruption, and so is
// a block the journal inode does not map.
func (j *journal) locate(pos uint64) (uint64, error) {
	if pos >= j.totalLen {
		return 0, corruptf(BadLog, int64(pos), "the log reaches block %d, beyond the journal's %d blocks (corrupted journal superblock or descriptor)", pos, j.totalLen)
	}
	i := sort.Search(len(j.runs), func(i int) bool { return j.runs[i].logical+j.runs[i].length > pos })
	if i == len(j.runs) || j.runs[i].logical > pos {
		return 0, corruptf(BadJournalInode, int64(pos), "journal block %d is not mapped", pos)
	}
	r := j.runs[i]
	switch {
	case r.err != nil:
		e := corruptf(BadJournalInode, int64(pos), "cannot map journal block %d", pos)
		e.Err = r.err
		return 0, e
	case r.hole:
		return 0, corruptf(BadJournalInode, int64(pos), "journal block %d is a hole in the journal inode", pos)
	}
	return r.phys + (pos - r.logical), nil
}

// read fills buf with journal block pos and returns its device block.
func (j *journal) read(pos uint64, buf []byte) (uint64, error) {
	phys, err := j.locate(pos)
	if err != nil {
		return 0, err
	}
	return phys, readFull(j.dev, buf, int64(phys)*int64(j.bs))
}

// inJournal reports whether device block b holds part of the journal.
func (j *journal) inJournal(b uint64) bool {
	i := sort.Search(len(j.byPhys), func(i int) bool { return j.byPhys[i].phys+j.byPhys[i].length > b })
	return i < len(j.byPhys) && j.byPhys[i].phys <= b
}

// wrap is the wrap() macro: a position that runs off the end of the log
// continues at its start.
func (j *journal) wrap(pos uint64) uint64 {
	if pos >= j.last {
		pos -= j.last - j.first
	}
	return pos
}

// readFull reads exactly len(p) bytes at off, turning short reads into
// *ext4.IOError as internal/ext4 does.
func readFull(dev io.ReaderAt, p []byte, off int64) error {
	if off < 0 {
		return &ext4.IOError{Off: off, Len: int64(len(p)), Err: errors.New("negative offset")}
	}
	n, err := dev.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return &ext4.IOError{Off: off, Len: int64(len(p)), Err: err}
}
