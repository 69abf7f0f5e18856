package fusefs

import "github.com/hanwen/go-fuse/v2/fuse"

// Every request that would change the filesystem fails with EROFS. The
// mount is read-only too, so the kernel refuses most of these before they
// get here; answering them explicitly keeps the server read-only even on
// a mount that is not, and does not depend on what go-fuse's default
// answers (ENOSYS, which the kernel would remember as "not supported").

// SetAttr refuses chmod, chown, truncate and utimes.
func (f *FS) SetAttr(cancel <-chan struct{}, input *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	return fuse.EROFS
}

// Mknod refuses to create device nodes, FIFOs and sockets.
func (f *FS) Mknod(cancel <-chan struct{}, input *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	return fuse.EROFS
}

// Mkdir refuses to create directories.
func (f *FS) Mkdir(cancel <-chan struct{}, input *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	return fuse.EROFS
}

// Unlink refuses to remove names.
func (f *FS) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return fuse.EROFS
}

// Rmdir refuses to remove directories.
func (f *FS) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return fuse.EROFS
}

// Rename refuses renames (RENAME and RENAME2).
func (f *FS) Rename(cancel <-chan struct{}, input *fuse.RenameIn, oldName string, newName string) fuse.Status {
	return fuse.EROFS
}

// Link refuses to create hard links.
func (f *FS) Link(cancel <-chan struct{}, input *fuse.LinkIn, filename string, out *fuse.EntryOut) fuse.Status {
	return fuse.EROFS
}

// Symlink refuses to create symlinks.
func (f *FS) Symlink(cancel <-chan struct{}, h *fuse.InHeader, pointedTo string, linkName string, out *fuse.EntryOut) fuse.Status {
	return fuse.EROFS
}

// SetXAttr refuses to set extended attributes (and ACLs).
func (f *FS) SetXAttr(cancel <-chan struct{}, input *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	return fuse.EROFS
}

// RemoveXAttr refuses to remove extended attributes.
func (f *FS) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	return fuse.EROFS
}

// Create refuses to create files.
func (f *FS) Create(cancel <-chan struct{}, input *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	return fuse.EROFS
}

// Tmpfile refuses O_TMPFILE.
func (f *FS) Tmpfile(cancel <-chan struct{}, input *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	return fuse.EROFS
}

// Write refuses writes. Open already refuses to open for writing.
func (f *FS) Write(cancel <-chan struct{}, input *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	return 0, fuse.EROFS
}

// Writev refuses writes.
func (f *FS) Writev(cancel <-chan struct{}, input *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	return 0, fuse.EROFS
}

// CopyFileRange refuses copies into this filesystem.
func (f *FS) CopyFileRange(cancel <-chan struct{}, input *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	return 0, fuse.EROFS
}

// Fallocate refuses to allocate or punch holes.
func (f *FS) Fallocate(cancel <-chan struct{}, input *fuse.FallocateIn) fuse.Status {
	return fuse.EROFS
}
