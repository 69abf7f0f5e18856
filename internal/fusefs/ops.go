package fusefs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"safefs/internal/ext4"
	"safefs/internal/iomap"
)

// maxNameLen is EXT4_NAME_LEN. The kernel's ext4 answers ENAMETOOLONG for
// longer names before searching; FUSE would allow up to 1024 bytes.
const maxNameLen = 255

// Lookup answers a name lookup. A missing name gets a negative entry with
// the full timeout (NodeId 0 and OK, which FUSE caches, rather than ENOENT,
// which it does not): shells, loaders and editors probe for the same
// missing files over and over.
func (f *FS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	dir, st := f.inode(h, "lookup")
	if !st.Ok() {
		return st
	}
	if !dir.IsDir() {
		return fuse.ENOTDIR
	}
	if len(name) > maxNameLen {
		return fuse.Status(syscall.ENAMETOOLONG)
	}
	ino, _, err := f.fsys.Lookup(dir, []byte(name))
	if errors.Is(err, ext4.ErrNotFound) {
		*out = fuse.EntryOut{}
		out.SetEntryTimeout(f.ttl)
		return fuse.OK
	}
	var in *ext4.Inode
	if err == nil {
		in, err = f.fsys.Inode(ino)
	}
	if err != nil {
		return f.fail(err, fmt.Sprintf("lookup of %q in directory inode %d", name, dir.Ino))
	}
	if st := f.checkInode(in, "lookup"); !st.Ok() {
		return st
	}
	f.fillEntry(in, out)
	return fuse.OK
}

// Forget has nothing to do: node IDs are inode numbers, resolved from the
// filesystem on every request, so the server holds no per-node state that
// the kernel's lookup counts would keep alive.
func (f *FS) Forget(nodeid, nlookup uint64) {}

// GetAttr answers stat(2).
func (f *FS) GetAttr(cancel <-chan struct{}, input *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	in, st := f.inode(&input.InHeader, "getattr")
	if !st.Ok() {
		return st
	}
	out.SetTimeout(f.ttl)
	f.fillAttr(in, &out.Attr)
	return fuse.OK
}

// Statx answers statx(2) when the caller asks for more than the basic
// fields, which for FUSE means the creation time.
func (f *FS) Statx(cancel <-chan struct{}, input *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	in, st := f.inode(&input.InHeader, "statx")
	if !st.Ok() {
		return st
	}
	var a fuse.Attr
	f.fillAttr(in, &a)
	out.SetTimeout(f.ttl)
	sx := &out.Statx
	*sx = fuse.Statx{
		Mask:    unix.STATX_BASIC_STATS,
		Blksize: a.Blksize,
		Nlink:   a.Nlink,
		Uid:     a.Uid,
		Gid:     a.Gid,
		Mode:    uint16(a.Mode),
		Ino:     a.Ino,
		Size:    a.Size,
		Blocks:  a.Blocks,
		Atime:   fuse.SxTime{Sec: a.Atime, Nsec: a.Atimensec},
		Ctime:   fuse.SxTime{Sec: a.Ctime, Nsec: a.Ctimensec},
		Mtime:   fuse.SxTime{Sec: a.Mtime, Nsec: a.Mtimensec},
	}
	// Like the kernel's ext4: a creation time only where the inode is
	// large enough to store one.
	if in.HasCrtime {
		sx.Mask |= unix.STATX_BTIME
		sx.Btime = fuse.SxTime{Sec: uint64(in.Crtime.Sec), Nsec: in.Crtime.Nsec}
	}
	if t := in.Type(); t == ext4.ModeChar || t == ext4.ModeBlock {
		sx.RdevMajor, sx.RdevMinor = in.Rdev()
	}
	// The attribute bits ext4_getattr reports. Kernels up to 6.18 drop
	// them on the FUSE path, but they cost nothing and are right.
	for _, m := range []struct {
		flag uint32
		attr uint64
	}{
		{ext4.FlagAppend, unix.STATX_ATTR_APPEND},
		{ext4.FlagCompr, unix.STATX_ATTR_COMPRESSED},
		{ext4.FlagEncrypt, unix.STATX_ATTR_ENCRYPTED},
		{ext4.FlagImmutable, unix.STATX_ATTR_IMMUTABLE},
		{ext4.FlagNodump, unix.STATX_ATTR_NODUMP},
		{ext4.FlagVerity, unix.STATX_ATTR_VERITY},
	} {
		sx.AttributesMask |= m.attr
		if in.Flags&m.flag != 0 {
			sx.Attributes |= m.attr
		}
	}
	return fuse.OK
}

// Readlink returns a symlink's target. The kernel caches it in the page
// cache (FUSE_CACHE_SYMLINKS), so each link is read once per mount.
func (f *FS) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	in, st := f.inode(h, "readlink")
	if !st.Ok() {
		return nil, st
	}
	if !in.IsSymlink() {
		return nil, fuse.EINVAL
	}
	target, err := f.fsys.Readlink(in)
	if err != nil {
		return nil, f.fail(err, describe("readlink", in.Ino))
	}
	// FUSE carries at most a page less its terminating NUL; the kernel
	// treats a longer reply as a broken server. Only blocks larger than
	// the page size (which the kernel's ext4 cannot mount here) allow
	// such targets, and no path can use them (PATH_MAX).
	if len(target) >= syscall.Getpagesize() {
		return nil, f.fail(&ext4.CorruptError{Kind: ext4.BadSymlink, Ino: in.Ino, Group: -1,
			Detail: fmt.Sprintf("target of %d bytes is longer than PATH_MAX", len(target))}, describe("readlink", in.Ino))
	}
	return target, fuse.OK
}

// Access is only asked when the mount lacks default_permissions, which
// FUSE_POSIX_ACL (always negotiated) turns on: the kernel then checks
// modes and ACLs itself. All that is left to say is that nothing is
// writable.
func (f *FS) Access(cancel <-chan struct{}, input *fuse.AccessIn) fuse.Status {
	if _, st := f.inode(&input.InHeader, "access"); !st.Ok() {
		return st
	}
	if input.Mask&unix.W_OK != 0 {
		return fuse.EROFS
	}
	return fuse.OK
}

// OpenDir answers ENOSYS, which the kernel takes as "opening needs no
// server" for the whole mount (fc->no_opendir): it then opens directories
// itself with FOPEN_KEEP_CACHE and FOPEN_CACHE_DIR, so a listing stays in
// its page cache across opens, and sends neither OPENDIR nor RELEASEDIR.
// No handle is needed: READDIR names the directory and carries the ext4
// cursor as its offset, and the kernel has checked the file type.
func (f *FS) OpenDir(cancel <-chan struct{}, input *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	return fuse.ENOSYS
}

// ReadDir lists a directory from the offset the kernel gives, which is
// an ext4 ReadDir cursor (every entry's Off is the cursor after it), so
// seekdir/telldir work and no per-handle state is kept.
func (f *FS) ReadDir(cancel <-chan struct{}, input *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return f.readDir(input, out, false)
}

// ReadDirPlus lists a directory with each entry's attributes, saving the
// LOOKUP per entry that ls -l, find and cp -a would otherwise cost.
func (f *FS) ReadDirPlus(cancel <-chan struct{}, input *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return f.readDir(input, out, true)
}

func (f *FS) readDir(input *fuse.ReadIn, out *fuse.DirEntryList, plus bool) fuse.Status {
	dir, st := f.inode(&input.InHeader, "readdir")
	if !st.Ok() {
		return st
	}
	if !dir.IsDir() {
		return fuse.ENOTDIR
	}
	added := 0
	err := f.fsys.ReadDir(dir, input.Offset, func(e ext4.DirEntry) bool {
		if !f.showable(dir.Ino, e) {
			return true
		}
		de := fuse.DirEntry{Name: string(e.Name), Ino: uint64(e.Ino), Mode: direntMode(e.Type), Off: e.Next}
		if !plus {
			if !out.AddDirEntry(de) {
				return false
			}
			added++
			return true
		}
		eo := out.AddDirLookupEntry(de)
		if eo == nil {
			return false
		}
		added++
		// The kernel ignores attributes for "." and ".."; and an entry
		// naming the root inode (only a damaged directory has one) must
		// not hand out node 1 under another name. NodeId 0 lists the
		// name without attributes; a lookup then decides.
		if isDot(e.Name) || e.Ino == rootIno {
			return true
		}
		in, err := f.fsys.Inode(e.Ino)
		if err != nil {
			// Listed without attributes: the lookup that follows fails
			// with the right errno.
			f.fail(err, fmt.Sprintf("readdirplus of %q in directory inode %d", e.Name, dir.Ino))
			return true
		}
		if !f.checkInode(in, "readdirplus").Ok() {
			return true
		}
		f.fillEntry(in, eo)
		return true
	})
	if err != nil && added == 0 {
		// Entries already added are returned; the next READDIR resumes
		// after them and reports the error then, as a kernel mount does.
		return f.fail(err, describe("readdir", dir.Ino))
	}
	return fuse.OK
}

// showable filters names the kernel's FUSE rejects: an empty name or one
// containing '/' makes it fail the whole READDIR reply with EIO, which
// would hide the good names of the directory too. Such a name can come
// only from a damaged or hostile image and could never be looked up.
func (f *FS) showable(dir uint32, e ext4.DirEntry) bool {
	if len(e.Name) > 0 && bytes.IndexByte(e.Name, '/') < 0 {
		return true
	}
	f.errs.logOnce(fmt.Sprintf("name %d %q", dir, e.Name),
		"directory inode %d: entry %q (inode %d) is not shown: FUSE cannot carry an empty name or one containing '/'",
		dir, e.Name, e.Ino)
	return false
}

func isDot(name []byte) bool {
	return string(name) == "." || string(name) == ".."
}

// direntMode converts a directory entry's file type to the mode bits
// go-fuse turns into d_type. Without the filetype feature ext4 stores no
// type, and getdents reports DT_UNKNOWN as on the kernel's mount.
func direntMode(t ext4.FileType) uint32 {
	switch t {
	case ext4.FTRegular:
		return syscall.S_IFREG
	case ext4.FTDir:
		return syscall.S_IFDIR
	case ext4.FTChar:
		return syscall.S_IFCHR
	case ext4.FTBlock:
		return syscall.S_IFBLK
	case ext4.FTFIFO:
		return syscall.S_IFIFO
	case ext4.FTSocket:
		return syscall.S_IFSOCK
	case ext4.FTSymlink:
		return syscall.S_IFLNK
	}
	return 0
}

// Open answers ENOSYS, which the kernel takes as "opening needs no
// server" for the whole mount (fc->no_open): from then on it opens files
// itself, with FOPEN_KEEP_CACHE (the data cannot change, so pages stay
// cached across opens), and sends neither OPEN nor RELEASE. That halves
// the round trips of reading many small files (OPEN, READ and RELEASE
// each). Nothing is lost: no handle is needed (READ names the inode), the
// mount is read-only so the kernel refuses opens for writing itself, and a
// damaged inode already fails its LOOKUP. (Were a mount ever made without
// the read-only flag, writes would fail with EROFS at WRITE or SETATTR.)
// FLUSH gets ENOSYS once, which the kernel remembers too.
func (f *FS) Open(cancel <-chan struct{}, input *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	return fuse.ENOSYS
}

// Read reads file data through the mapping engine, which reads each
// merged mapping of the range with one device read: a 1 MiB request over
// an unfragmented file is one pread. (With FUSE iomap, regular files other
// than inline-data ones are read by the kernel itself and never get here.)
func (f *FS) Read(cancel <-chan struct{}, input *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	in, st := f.inode(&input.InHeader, "read")
	if !st.Ok() {
		return nil, st
	}
	if !in.IsRegular() {
		return nil, fuse.EINVAL
	}
	if input.Offset > math.MaxInt64 {
		return nil, fuse.EINVAL
	}
	n := min(len(buf), int(input.Size))
	got, err := f.maps.ReadAt(in, buf[:n], int64(input.Offset))
	if err != nil && err != io.EOF {
		// No partial data: FUSE takes a short read of a cached file as
		// the end of the file and would shrink its size in the kernel.
		return nil, f.fail(err, fmt.Sprintf("read of inode %d at offset %d", in.Ino, input.Offset))
	}
	return fuse.ReadResultData(buf[:got]), fuse.OK
}

// Release has nothing to release: Open keeps no state.
func (f *FS) Release(cancel <-chan struct{}, input *fuse.ReleaseIn) {}

// ReleaseDir has nothing to release: OpenDir keeps no state.
func (f *FS) ReleaseDir(input *fuse.ReleaseIn) {}

// Flush answers ENOSYS, which the kernel remembers for the whole mount
// (fc->no_flush), for kernels that ignore FOPEN_NOFLUSH (before 5.16).
func (f *FS) Flush(cancel <-chan struct{}, input *fuse.FlushIn) fuse.Status {
	return fuse.ENOSYS
}

// Fsync answers ENOSYS for the same reason as Flush; the kernel then
// reports success to fsync(2) without asking again (fc->no_fsync).
func (f *FS) Fsync(cancel <-chan struct{}, input *fuse.FsyncIn) fuse.Status {
	return fuse.ENOSYS
}

// FsyncDir is Fsync for directories (fc->no_fsyncdir).
func (f *FS) FsyncDir(cancel <-chan struct{}, input *fuse.FsyncIn) fuse.Status {
	return fuse.ENOSYS
}

// StatFs reports the numbers the kernel's ext4 statfs reports. FUSE has no
// field for f_fsid; the kernel reports 0 there for every FUSE mount.
func (f *FS) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	st, err := f.fsys.Statfs()
	if err != nil {
		return f.fail(err, "statfs")
	}
	*out = fuse.StatfsOut{
		Blocks:  st.Blocks,
		Bfree:   st.BlocksFree,
		Bavail:  st.BlocksAvail,
		Files:   st.Files,
		Ffree:   st.FilesFree,
		Bsize:   st.BlockSize,
		Frsize:  st.BlockSize,
		NameLen: st.NameLen,
	}
	return fuse.OK
}

// GetXAttr returns one extended attribute, from any namespace. POSIX ACLs
// come back in the Linux xattr form: with FUSE_POSIX_ACL the kernel reads
// system.posix_acl_* through here for its own permission checks and
// caches them.
func (f *FS) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	in, st := f.inode(h, "getxattr")
	if !st.Ok() {
		return 0, st
	}
	val, err := f.fsys.GetXattr(in, attr)
	if errors.Is(err, ext4.ErrNoXattr) {
		// The common answer (ls -l asks every file for
		// security.selinux and its ACL): no description to format.
		return 0, fuse.ENODATA
	}
	if err != nil {
		return 0, f.fail(err, fmt.Sprintf("getxattr %q of inode %d", attr, in.Ino))
	}
	return xattrReply(val, dest)
}

// ListXAttr lists the names of all extended attributes. trusted.* names
// are left out for callers other than root: the kernel's ext4 lists them
// only to CAP_SYS_ADMIN, and FUSE passes the list through unfiltered
// (FUSE tells the caller's uid, not its capabilities).
func (f *FS) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	in, st := f.inode(h, "listxattr")
	if !st.Ok() {
		return 0, st
	}
	names, err := f.fsys.ListXattrs(in)
	if err != nil {
		return 0, f.fail(err, describe("listxattr", in.Ino))
	}
	var list []byte
	for _, n := range names {
		if h.Uid != 0 && len(n) >= len("trusted.") && n[:len("trusted.")] == "trusted." {
			continue
		}
		list = append(append(list, n...), 0)
	}
	return xattrReply(list, dest)
}

// xattrReply follows getxattr(2)'s size protocol: an empty buffer asks for
// the size, a short one gets ERANGE.
func xattrReply(val, dest []byte) (uint32, fuse.Status) {
	if len(dest) == 0 {
		return uint32(len(val)), fuse.OK
	}
	if len(dest) < len(val) {
		return uint32(len(val)), fuse.ERANGE
	}
	return uint32(copy(dest, val)), fuse.OK
}

// Lseek answers SEEK_DATA and SEEK_HOLE (the kernel handles the other
// whences itself) from the mapping engine: as on the kernel's ext4, mapped
// blocks are data and holes and unwritten (preallocated) extents are
// holes, clipped to i_size; inline data is all data.
func (f *FS) Lseek(cancel <-chan struct{}, input *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	in, st := f.inode(&input.InHeader, "lseek")
	if !st.Ok() {
		return st
	}
	if input.Whence != unix.SEEK_DATA && input.Whence != unix.SEEK_HOLE {
		return fuse.EINVAL
	}
	if !in.IsRegular() {
		return fuse.EINVAL
	}
	off, err := f.maps.Seek(in, input.Offset, int(input.Whence))
	switch {
	case errors.Is(err, iomap.ErrNoData):
		return fuse.Status(syscall.ENXIO)
	case errors.Is(err, iomap.ErrOffset):
		return fuse.EINVAL
	case err != nil:
		return f.fail(err, fmt.Sprintf("lseek of inode %d from offset %d", in.Ino, input.Offset))
	}
	out.Offset = off
	return fuse.OK
}

// ioctl commands. The kernel turns FS_IOC_GETFLAGS (lsattr) and
// FS_IOC_FSGETXATTR (lsattr -p, xfs_io) into FUSE_IOCTL requests of its
// own (fuse_fileattr_get), with a 4-byte and a struct fsxattr reply.
const (
	fsIocGetflags   = 0x80086601 // FS_IOC_GETFLAGS
	fsIocSetflags   = 0x40086602 // FS_IOC_SETFLAGS
	fsIoc32Getflags = 0x80046601 // FS_IOC32_GETFLAGS
	fsIoc32Setflags = 0x40046602 // FS_IOC32_SETFLAGS
	fsIocFsgetxattr = 0x801c581f // FS_IOC_FSGETXATTR
	fsIocFssetxattr = 0x401c5820 // FS_IOC_FSSETXATTR
	fsxattrSize     = 28         // struct fsxattr
)

// Ioctl answers the inode flag ioctls, as the kernel's ext4 does:
// FS_IOC_GETFLAGS returns i_flags masked to the user-visible bits.
func (f *FS) Ioctl(cancel <-chan struct{}, input *fuse.IoctlIn, inbuf []byte, out *fuse.IoctlOut, outbuf []byte) fuse.Status {
	switch input.Cmd {
	case fsIocSetflags, fsIoc32Setflags, fsIocFssetxattr:
		return fuse.EROFS
	case fsIocGetflags, fsIoc32Getflags, fsIocFsgetxattr:
	default:
		return fuse.Status(syscall.ENOTTY)
	}
	in, st := f.inode(&input.InHeader, "ioctl")
	if !st.Ok() {
		return st
	}
	flags := in.Flags & ext4.FlagsUserVisible
	if input.Cmd != fsIocFsgetxattr {
		if len(outbuf) < 4 {
			return fuse.EINVAL
		}
		binary.NativeEndian.PutUint32(outbuf, flags)
		return fuse.OK
	}
	if len(outbuf) < fsxattrSize {
		return fuse.EINVAL
	}
	clear(outbuf[:fsxattrSize])
	binary.NativeEndian.PutUint32(outbuf[0:], xflags(flags))
	if f.fsys.Superblock().HasRoCompat(ext4.RoCompatProject) {
		binary.NativeEndian.PutUint32(outbuf[12:], in.ProjectID)
	}
	return fuse.OK
}

// xflags converts inode flags to FS_XFLAG_* bits as the kernel's
// fileattr_fill_flags does.
func xflags(flags uint32) uint32 {
	var x uint32
	for _, m := range []struct{ fl, xfl uint32 }{
		{ext4.FlagSync, 0x20},         // FS_XFLAG_SYNC
		{ext4.FlagImmutable, 0x8},     // FS_XFLAG_IMMUTABLE
		{ext4.FlagAppend, 0x10},       // FS_XFLAG_APPEND
		{ext4.FlagNodump, 0x80},       // FS_XFLAG_NODUMP
		{ext4.FlagNoatime, 0x40},      // FS_XFLAG_NOATIME
		{ext4.FlagDax, 0x8000},        // FS_XFLAG_DAX
		{ext4.FlagProjinherit, 0x200}, // FS_XFLAG_PROJINHERIT
	} {
		if flags&m.fl != 0 {
			x |= m.xfl
		}
	}
	return x
}
