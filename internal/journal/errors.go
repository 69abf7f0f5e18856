package journal

import (
	"errors"
	"fmt"
)

// ErrCorrupt matches every *CorruptError with errors.Is, so that callers can
// tell "the journal is damaged" from I/O errors without a type switch.
var ErrCorrupt = errors.New("journal: the journal is corrupt")

// Corruption names the part of the journal a CorruptError is about, so that
// a log line tells a person where to look (debugfs logdump shows each).
type Corruption int

// The kinds of journal corruption.
const (
	// BadJournalInode: the inode that holds the journal (or the ext4
	// superblock fields naming it) is unusable: wrong type, deleted, a
	// bad checksum, an unmappable or missing block, a size that cannot
	// hold the journal.
	BadJournalInode Corruption = iota + 1
	// BadJournalSuperblock: the journal's own superblock (journal block 0)
	// fails the checks jbd2 makes when it loads a journal.
	BadJournalSuperblock
	// BadDescriptor: a descriptor block fails its checksum, or one of its
	// tags names a block safefs cannot replay.
	BadDescriptor
	// BadRevoke: a revoke block fails its checksum, or its record count
	// overruns the block.
	BadRevoke
	// BadCommit: a commit block fails its checksum, so the transaction it
	// closes (and every later one) is not replayed, and the kernel refuses
	// the mount.
	BadCommit
	// BadDataBlock: a journaled copy of a block fails the checksum in its
	// descriptor tag; the kernel replays everything else and refuses the
	// mount.
	BadDataBlock
	// BadLog: the log as a whole is impossible: a position beyond the
	// journal, a log longer than the journal, a block that changed between
	// two readings.
	BadLog
	// BadFastCommit: the fast-commit area starts with a record the kernel
	// rejects (a malformed or unsupported head tag).
	BadFastCommit
)

var corruptionNames = map[Corruption]string{
	BadJournalInode:      "journal inode",
	BadJournalSuperblock: "journal superblock",
	BadDescriptor:        "descriptor block",
	BadRevoke:            "revoke block",
	BadCommit:            "commit block",
	BadDataBlock:         "journaled block",
	BadLog:               "log",
	BadFastCommit:        "fast-commit area",
}

// String returns a short human name for the kind.
func (c Corruption) String() string {
	if s, ok := corruptionNames[c]; ok {
		return s
	}
	return fmt.Sprintf("corruption(%d)", int(c))
}

// CorruptError reports journal damage that stops or limits the replay. The
// kernel refuses to mount a filesystem whose journal fails this way.
type CorruptError struct {
	Kind Corruption
	// Block is the position of the journal block concerned, counted from
	// the start of the journal as debugfs logdump counts, or -1.
	Block int64
	// Checksum is true when the damage is a checksum mismatch (the kernel
	// reports EFSBADCRC, that is EBADMSG, rather than EFSCORRUPTED).
	Checksum bool
	// Detail says what check failed, in words a person can act on.
	Detail string
	// Err is the underlying error, if any (a *ext4.CorruptError from
	// mapping the journal inode, for instance).
	Err error
}

// Error formats the error as "journal: block 12: descriptor block: <detail>".
func (e *CorruptError) Error() string {
	s := "journal: "
	if e.Block >= 0 {
		s += fmt.Sprintf("block %d: ", e.Block)
	}
	s += e.Kind.String() + ": " + e.Detail
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Is makes errors.Is(err, ErrCorrupt) true for every CorruptError.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// Unwrap returns the underlying error, if any.
func (e *CorruptError) Unwrap() error { return e.Err }

// IsChecksum reports whether the damage is a checksum mismatch.
func (e *CorruptError) IsChecksum() bool { return e.Checksum }

func corruptf(kind Corruption, block int64, format string, args ...any) *CorruptError {
	return &CorruptError{Kind: kind, Block: block, Detail: fmt.Sprintf(format, args...)}
}

func badCsumf(kind Corruption, block int64, format string, args ...any) *CorruptError {
	e := corruptf(kind, block, format, args...)
	e.Checksum = true
	return e
}

// ExternalJournalError reports that the filesystem keeps its journal on a
// separate device. The journal needs recovery, and safefs reads only the
// one device it was given, so it cannot show the recovered filesystem.
type ExternalJournalError struct {
	// Dev is s_journal_dev, the journal device's number as the kernel
	// encodes it (0 when only the UUID names it).
	Dev uint32
	// UUID is s_journal_uuid, the journal device's UUID (all zero if
	// unset).
	UUID [16]byte
}

// Error explains the refusal and what the user can do instead.
func (e *ExternalJournalError) Error() string {
	u := e.UUID
	return fmt.Sprintf("journal: the filesystem needs journal recovery but its journal is on an external device "+
		"(device number 0x%x, journal UUID %x-%x-%x-%x-%x), which safefs cannot read; "+
		"mount it with the kernel's ext4 (with the journal device present) or run e2fsck -j on the journal device",
		e.Dev, u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// FeatureError reports a journal feature or record that safefs cannot
// replay as the kernel would, so the filesystem is refused rather than shown
// in a state the kernel would never show.
type FeatureError struct {
	Feature string // e.g. "fast_commit", or "journal incompat bit 0x40"
	Reason  string
}

// Error names the feature and why it is refused.
func (e *FeatureError) Error() string {
	return fmt.Sprintf("journal: unsupported journal feature %q: %s", e.Feature, e.Reason)
}
