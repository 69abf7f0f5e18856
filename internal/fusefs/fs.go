package fusefs

import (
	"errors"
	"log"
	"math"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"safefs/internal/ext4"
	"safefs/internal/fuseloop"
	"safefs/internal/iomap"
	"safefs/internal/iomap/abi"
)

// DefaultTimeout is how long the kernel may trust an entry, a negative
// entry or attributes without asking again. The filesystem is immutable
// while served (read-only mount, device held exclusively), so any timeout
// is correct; a long one turns repeated stat(2) and path walks into pure
// kernel work. A day rather than "forever" keeps the number far from any
// overflow in the kernel's jiffies arithmetic.
const DefaultTimeout = 24 * time.Hour

// Options configure a server. The zero value is ready to use.
type Options struct {
	// Logf receives one line per event a person should know about:
	// damaged objects (once each), names FUSE cannot show, go-fuse's own
	// complaints. Default: log.Printf.
	Logf func(format string, args ...any)
	// Errors, if set, is the log of damaged objects to use. Share one
	// ErrorLog between ext4.Options.Report and the server so that an
	// object is logged once whichever side finds the damage first.
	// Default: a new ErrorLog writing through Logf.
	Errors *ErrorLog
	// Timeout overrides DefaultTimeout for entries, negative entries and
	// attributes.
	Timeout time.Duration
	// Debug makes go-fuse log every request and reply.
	Debug bool
	// IomapDevice is the device cookie FUSE iomap mappings name: on a
	// fuseblk mount, abi.DevFuseblk, the mount's own block device, which
	// is the device the filesystem is read from. abi.DevNull (zero)
	// declines iomap, which a mount of an image file must: the kernel
	// would have no block device to read.
	IomapDevice uint32
	// Source names the filesystem in the kernel's messages about the
	// mount (s_id, as FUSE_IOMAP_CONFIG sets it): the device's name, such
	// as "sdb1". At most 31 bytes are used.
	Source string
}

// FS implements fuse.RawFileSystem over an *ext4.FS, read-only. Requests
// that would change the filesystem fail with EROFS; anything else that is
// not implemented falls through to go-fuse's defaults (ENOSYS), which the
// kernel treats as "not supported, do not ask again" where that matters.
type FS struct {
	// The embedded default answers the operations a read-only ext4 server
	// has no use for (locks, poll). Every operation that changes
	// something is overridden in readonly.go, so none of them depends on
	// what the default happens to answer.
	fuse.RawFileSystem

	fsys      *ext4.FS
	errs      *ErrorLog
	logf      func(format string, args ...any)
	ttl       time.Duration
	blockSize uint32
	debug     bool

	// maps answers where file data lives, for READ, lseek and iomap.
	maps *iomap.Engine
	// iomapDev is Options.IomapDevice; iomapActive is set once INIT
	// negotiated iomap with it.
	iomapDev    uint32
	iomapActive atomic.Bool
	source      string
	// loop serves the connection and sends notifications (nil when
	// served by something else, such as go-fuse's own server in tests).
	loop atomic.Pointer[fuseloop.Loop]
}

// New returns a read-only FUSE filesystem serving fsys.
func New(fsys *ext4.FS, opts Options) *FS {
	logf := opts.Logf
	if logf == nil {
		logf = log.Printf
	}
	errs := opts.Errors
	if errs == nil {
		errs = NewErrorLog(logf)
	}
	ttl := opts.Timeout
	if ttl <= 0 {
		ttl = DefaultTimeout
	}
	return &FS{
		RawFileSystem: fuse.NewDefaultRawFileSystem(),
		fsys:          fsys,
		errs:          errs,
		logf:          logf,
		ttl:           ttl,
		blockSize:     fsys.BlockSize(),
		debug:         opts.Debug,
		maps:          iomap.New(fsys, fsys.Device()),
		iomapDev:      opts.IomapDevice,
		source:        opts.Source,
	}
}

// String names the filesystem in go-fuse's messages.
func (f *FS) String() string { return "safefs-ext4" }

const (
	rootIno  = 2 // EXT4_ROOT_INO
	rootNode = fuse.FUSE_ROOT_ID
)

// inoOf maps a FUSE node ID to an ext4 inode number. Node 2 is never
// handed out (inode 2 is node 1), and IDs beyond 32 bits cannot be ext4
// inodes; the kernel only sends IDs we gave it, so these mean a stale or
// bogus handle.
func inoOf(node uint64) (uint32, bool) {
	switch {
	case node == rootNode:
		return rootIno, true
	case node == rootIno || node == 0 || node > math.MaxUint32:
		return 0, false
	}
	return uint32(node), true
}

// nodeOf maps an ext4 inode number to its FUSE node ID.
func nodeOf(ino uint32) uint64 {
	if ino == rootIno {
		return rootNode
	}
	return uint64(ino)
}

// inode fetches the object a request is about.
func (f *FS) inode(h *fuse.InHeader, op string) (*ext4.Inode, fuse.Status) {
	ino, ok := inoOf(h.NodeId)
	if !ok {
		return nil, fuse.Status(syscall.ESTALE)
	}
	in, err := f.fsys.Inode(ino)
	if err != nil {
		return nil, f.fail(err, describe(op, ino))
	}
	if st := f.checkInode(in, op); !st.Ok() {
		return nil, st
	}
	return in, fuse.OK
}

// checkInode refuses what the kernel's FUSE would refuse anyway: a mode
// with no valid file type. The kernel answers EIO without saying why;
// this way the object is named in the log, and the error is EUCLEAN as on
// the kernel's ext4 ("bogus i_mode").
func (f *FS) checkInode(in *ext4.Inode, op string) fuse.Status {
	switch in.Type() {
	case ext4.ModeRegular, ext4.ModeDir, ext4.ModeSymlink, ext4.ModeChar,
		ext4.ModeBlock, ext4.ModeFIFO, ext4.ModeSocket:
		return fuse.OK
	}
	return f.fail(&ext4.CorruptError{Kind: ext4.BadInode, Ino: in.Ino, Group: -1,
		Detail: "invalid file type in i_mode 0" + strconv.FormatUint(uint64(in.Mode), 8)}, describe(op, in.Ino))
}

// fail turns an ext4 error into the errno the kernel's ext4 would give,
// logging damage once per object. Corruption gives EUCLEAN (the kernel's
// EFSCORRUPTED) and a checksum mismatch EBADMSG (EFSBADCRC), rather than a
// bare EIO for everything: a person (or a tool) can then tell "the
// filesystem is damaged, run e2fsck" from "the device failed", as on a
// kernel mount.
// what says which request failed, for the log.
func (f *FS) fail(err error, what string) fuse.Status {
	e := errnoOf(err)
	if e == syscall.EUCLEAN || e == syscall.EBADMSG || e == syscall.EIO {
		f.errs.object(err, what)
	}
	return fuse.Status(e)
}

// describe names a request on one inode, e.g. "read of inode 12".
func describe(op string, ino uint32) string {
	return op + " of inode " + strconv.FormatUint(uint64(ino), 10)
}

// errnoOf maps errors from internal/ext4 to errno values.
func errnoOf(err error) syscall.Errno {
	var ce *ext4.CorruptError
	switch {
	case errors.Is(err, ext4.ErrNotFound):
		return syscall.ENOENT
	case errors.Is(err, ext4.ErrNoXattr):
		return syscall.ENODATA
	case errors.Is(err, ext4.ErrXattrNamespace):
		return syscall.EOPNOTSUPP
	case errors.As(err, &ce):
		if ce.IsChecksum() {
			return syscall.EBADMSG
		}
		return syscall.EUCLEAN
	}
	return syscall.EIO
}

// fillAttr converts an inode to FUSE attributes as the kernel's ext4
// getattr would report them.
func (f *FS) fillAttr(in *ext4.Inode, a *fuse.Attr) {
	*a = fuse.Attr{
		Ino:    uint64(in.Ino),
		Size:   in.Size,
		Blocks: in.Blocks,
		// Times are signed on the wire too (the kernel reads the u64 as
		// time64_t), so times before 1970 survive the conversion.
		Atime:     uint64(in.Atime.Sec),
		Mtime:     uint64(in.Mtime.Sec),
		Ctime:     uint64(in.Ctime.Sec),
		Atimensec: in.Atime.Nsec,
		Mtimensec: in.Mtime.Nsec,
		Ctimensec: in.Ctime.Nsec,
		Mode:      uint32(in.Mode),
		Nlink:     uint32(in.LinksCount),
		Owner:     fuse.Owner{Uid: in.Uid, Gid: in.Gid},
		Blksize:   f.blockSize,
	}
	if t := in.Type(); t == ext4.ModeChar || t == ext4.ModeBlock {
		a.Rdev = encodeDev(in.Rdev())
	}
	if f.usesIomap(in) {
		a.Flags |= abi.AttrIomap
	}
}

// encodeDev packs a device number the way the kernel's new_encode_dev
// does, which is how FUSE carries rdev (fuse_attr.rdev, 32 bits).
func encodeDev(major, minor uint32) uint32 {
	return minor&0xff | major<<8 | (minor&^0xff)<<12
}

// fillEntry fills a LOOKUP (or READDIRPLUS) reply for in.
func (f *FS) fillEntry(in *ext4.Inode, out *fuse.EntryOut) {
	out.NodeId = nodeOf(in.Ino)
	out.Generation = uint64(in.Generation)
	out.SetEntryTimeout(f.ttl)
	out.SetAttrTimeout(f.ttl)
	f.fillAttr(in, &out.Attr)
}
