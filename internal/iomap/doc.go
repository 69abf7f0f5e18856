// Package iomap is the one source of truth for where file data lives.
//
// It turns (inode, byte range, operation) into mappings — MAPPED with a
// device byte address, HOLE, UNWRITTEN or INLINE — aligned to the
// filesystem block size and merged across adjacent extents, built from
// internal/ext4's MapBlock. Everything that needs file data placement goes
// through the Engine: the classic FUSE READ path (Engine.ReadAt, one device
// read per merged mapping), SEEK_DATA/SEEK_HOLE (Engine.Seek), and the
// FUSE iomap protocol (Engine.Begin), where the kernel asks for mappings and
// does the data I/O to the block device itself.
//
// The FUSE iomap wire ABI (every number of that unreleased kernel
// interface, the encoders and decoders of its structures, and the checks
// the kernel applies to a server's replies) is the subpackage abi, which
// the privileged mount helper can use without linking the ext4 parser.
//
// The filesystem is read-only: there is no allocation and no delayed
// allocation. A BEGIN reply carries the read mapping and "pure overwrite"
// in the write slot (the kernel requires a valid write mapping even for
// reads); operations that would write are refused with EROFS.
package iomap
