package ext4

import (
	"errors"
	"fmt"
	"io/fs"
)

// ErrCorrupt matches every *CorruptError with errors.Is.
var ErrCorrupt = errors.New("ext4: filesystem structure is corrupt")

// ErrNotFound is returned by Lookup when a directory has no entry of that name.
var ErrNotFound = errors.New("ext4: no such directory entry")

// ErrNeedsRecovery is returned by Open when the journal holds transactions
// that were never written back (the needs_recovery feature is set) and
// Options.NoRecovery is false. Reading such a filesystem without replaying
// its journal shows stale metadata.
var ErrNeedsRecovery = errors.New("ext4: the journal needs recovery (the filesystem was not cleanly unmounted)")

// Corruption names the kind of structure a CorruptError is about.
type Corruption int

// The kinds of corruption. Each names the structure that failed its checks,
// so that a log line tells a person where to look.
const (
	BadSuperblock Corruption = iota + 1
	BadGroupDescriptor
	BadInode
	BadExtentTree
	BadBlockMap
	BadDirEntry
	BadHtree
	BadInlineData
	BadXattr
	BadSymlink
	BadACL
	BadBlockNumber
	BadChecksum
)

var corruptionNames = map[Corruption]string{
	BadSuperblock:      "superblock",
	BadGroupDescriptor: "group descriptor",
	BadInode:           "inode",
	BadExtentTree:      "extent tree",
	BadBlockMap:        "block map",
	BadDirEntry:        "directory entry",
	BadHtree:           "htree index",
	BadInlineData:      "inline data",
	BadXattr:           "extended attribute",
	BadSymlink:         "symlink",
	BadACL:             "ACL",
	BadBlockNumber:     "block number",
	BadChecksum:        "checksum",
}

// String returns a short human name for the kind.
func (c Corruption) String() string {
	if s, ok := corruptionNames[c]; ok {
		return s
	}
	return fmt.Sprintf("corruption(%d)", int(c))
}

// CorruptError reports a structure that failed validation. It concerns one
// object (an inode, a block, a group); other objects remain readable.
type CorruptError struct {
	Kind  Corruption
	Ino   uint32 // inode concerned, or 0
	Block uint64 // physical block concerned, or 0
	Group int64  // block group concerned, or -1 when not group-specific
	// Detail says what check failed, in words a person can act on.
	Detail string
}

// Error formats the error as "ext4: inode 12: extent tree: <detail>".
func (e *CorruptError) Error() string {
	s := "ext4: "
	if e.Ino != 0 {
		s += fmt.Sprintf("inode %d: ", e.Ino)
	}
	if e.Group >= 0 {
		s += fmt.Sprintf("group %d: ", e.Group)
	}
	if e.Block != 0 {
		s += fmt.Sprintf("block %d: ", e.Block)
	}
	return s + e.Kind.String() + ": " + e.Detail
}

// Is makes errors.Is(err, ErrCorrupt) true for every CorruptError.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// IsChecksum reports whether the error is a checksum mismatch (the kernel
// reports these as EBADMSG rather than EUCLEAN).
func (e *CorruptError) IsChecksum() bool { return e.Kind == BadChecksum }

func corruptf(kind Corruption, ino uint32, block uint64, format string, args ...any) *CorruptError {
	return &CorruptError{Kind: kind, Ino: ino, Block: block, Group: -1, Detail: fmt.Sprintf(format, args...)}
}

// FeatureError reports a filesystem feature this reader cannot show
// correctly, so the whole filesystem is refused.
type FeatureError struct {
	Feature string // e2fsprogs name, e.g. "compression", or "incompat bit 0x..."
	Reason  string
}

// Error names the feature and why it is refused.
func (e *FeatureError) Error() string {
	return fmt.Sprintf("ext4: unsupported filesystem feature %q: %s", e.Feature, e.Reason)
}

// FormatError reports that the device does not hold a filesystem this
// package can open at all: no ext2/3/4 magic, impossible geometry, a
// superblock that fails its checksum, or a device smaller than the
// filesystem.
type FormatError struct {
	Detail string
}

// Error returns the detail with the package prefix.
func (e *FormatError) Error() string { return "ext4: " + e.Detail }

func formatf(format string, args ...any) *FormatError {
	return &FormatError{Detail: fmt.Sprintf(format, args...)}
}

// IOError wraps a failed read of the device, naming the byte range.
type IOError struct {
	Off, Len int64
	Err      error
}

// Error names the range and the underlying error. A *fs.PathError's
// operation and file name are left out: the device was opened by someone
// else, whose name for it (fdpass's "fdpass", say) means nothing here, and
// whoever logs the error names the device.
func (e *IOError) Error() string {
	err := e.Err
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return fmt.Sprintf("ext4: reading %d bytes at device offset %d: %v", e.Len, e.Off, err)
}

// Unwrap returns the underlying read error.
func (e *IOError) Unwrap() error { return e.Err }
