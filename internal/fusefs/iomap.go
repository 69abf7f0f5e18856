package fusefs

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"

	"safefs/internal/ext4"
	"safefs/internal/fuseloop"
	"safefs/internal/iomap"
	"safefs/internal/iomap/abi"
)

// FUSE iomap. When the kernel offers FUSE_IOMAP in INIT (it does so only
// if mount.safe granted it with FUSE_DEV_IOC_ADD_IOMAP) and the server has
// a device cookie to name (Options.IomapDevice: the fuseblk mount's own
// block device), the server accepts it and regular files carry
// FUSE_ATTR_IOMAP: the kernel then asks for mappings (FUSE_IOMAP_BEGIN)
// and reads the block device itself, and file data no longer passes
// through the daemon. Inline-data files keep FUSE_READ, as the protocol
// wants. Nothing here can write: operations that would are refused with
// EROFS.

// ext4 limits reported in FUSE_IOMAP_CONFIG, as the kernel's ext4 sets
// them on its superblock.
const (
	ext4LinkMax = 65000 // EXT4_LINK_MAX
	// Timestamps: seconds in a signed 32-bit field, extended by two
	// epoch bits when the inode has room for the extra fields.
	ext4TimeMin      = -1 << 31               // EXT4_TIMESTAMP_MIN
	ext4TimeMaxOld   = 1<<31 - 1              // EXT4_NON_EXTRA_TIMESTAMP_MAX
	ext4TimeMaxExtra = 1<<34 - 1 + (-1 << 31) // EXT4_EXTRA_TIMESTAMP_MAX
)

// iomapOn reports whether the connection negotiated FUSE iomap.
func (f *FS) iomapOn() bool { return f.iomapActive.Load() }

// usesIomap reports whether the kernel should do in's data I/O through
// iomap (the attribute flag decides, per inode).
func (f *FS) usesIomap(in *ext4.Inode) bool {
	return f.iomapOn() && in.IsRegular() && !in.HasInlineData()
}

// initHook accepts FUSE_IOMAP when the kernel offers it and the server
// has a device to name in its mappings.
func (f *FS) initHook(in *fuse.InitIn, out *fuse.InitOut) {
	offered := uint64(in.Flags) | uint64(in.Flags2)<<32
	if f.iomapDev == abi.DevNull || offered&abi.InitIomap == 0 {
		return
	}
	out.Flags2 |= abi.InitFlags2Iomap
	f.iomapActive.Store(true)
}

// extensions are the iomap opcodes, which go-fuse does not know, for the
// server's own /dev/fuse loop.
func (f *FS) extensions() map[uint32]fuseloop.Handler {
	ok := func(fuseloop.Request) ([]byte, syscall.Errno) { return nil, 0 }
	return map[uint32]fuseloop.Handler{
		abi.OpIomapConfig: f.iomapConfig,
		abi.OpIomapBegin:  f.iomapBegin,
		// Nothing was allocated or reserved for a read, so there is
		// nothing to finish.
		abi.OpIomapEnd: ok,
		// Completions of writes (unwritten conversion, appends) cannot
		// happen: no mapping we hand out can be written through.
		abi.OpIomapIoend: func(fuseloop.Request) ([]byte, syscall.Errno) { return nil, syscall.EROFS },
		// A read-only filesystem is always consistent on the device:
		// freezing has nothing to flush, and shutting down nothing to
		// stop.
		abi.OpFreezeFS:   ok,
		abi.OpUnfreezeFS: ok,
		abi.OpShutdownFS: ok,
	}
}

// iomapConfig answers FUSE_IOMAP_CONFIG with the superblock's geometry and
// limits, as the kernel's ext4 sets them on its own superblock, and the
// source's name as s_id.
func (f *FS) iomapConfig(req fuseloop.Request) ([]byte, syscall.Errno) {
	var in abi.ConfigIn
	if err := abi.Unmarshal(req.Payload, &in); err != nil {
		f.logf("FUSE_IOMAP_CONFIG: %v", err)
		return nil, syscall.EINVAL
	}
	sb := f.fsys.Superblock()
	out := abi.ConfigOut{
		Flags:     abi.ConfigUUID | abi.ConfigBlockSize | abi.ConfigMaxLinks | abi.ConfigTime | abi.ConfigMaxBytes,
		UUIDLen:   16,
		BlockSize: f.blockSize,
		MaxLinks:  ext4LinkMax,
		TimeGran:  1,
		TimeMin:   ext4TimeMin,
		TimeMax:   ext4TimeMaxExtra,
		MaxBytes:  ext4MaxBytes(sb),
	}
	if f.source != "" {
		// NUL-terminated within the 32 bytes.
		copy(out.SID[:len(out.SID)-1], f.source)
		out.Flags |= abi.ConfigSID
	}
	copy(out.UUID[:], sb.UUID[:])
	if sb.InodeSize <= 128 {
		// No room for nanoseconds or epoch bits.
		out.TimeGran = 1e9
		out.TimeMax = ext4TimeMaxOld
	}
	return abi.Marshal(&out), 0
}

// iomapBegin answers FUSE_IOMAP_BEGIN: the mapping containing the
// position, for reads, direct reads and reports (FIEMAP, SEEK_DATA and
// SEEK_HOLE); writes are refused. When the mapping ends before the range
// asked for, the kernel will ask again at once for what follows: the
// next mapping is pushed into its cache (IOMAP_UPSERT_MAPPINGS) so that
// it need not.
func (f *FS) iomapBegin(req fuseloop.Request) ([]byte, syscall.Errno) {
	var in abi.BeginIn
	if err := abi.Unmarshal(req.Payload, &in); err != nil {
		f.logf("FUSE_IOMAP_BEGIN: %v", err)
		return nil, syscall.EINVAL
	}
	if !f.iomapOn() {
		return nil, syscall.ENOSYS
	}
	ino, st := f.inode(&req.InHeader, "iomap")
	if !st.Ok() {
		return nil, syscall.Errno(st)
	}
	if in.AttrIno != uint64(ino.Ino) {
		// The kernel echoes the st_ino we gave the node: anything else
		// is a confused request, not a file to guess.
		return nil, syscall.EINVAL
	}
	if !f.usesIomap(ino) {
		return nil, syscall.EINVAL
	}
	out, err := f.maps.Begin(ino, in, f.iomapDev)
	if err != nil {
		if errors.Is(err, iomap.ErrReadOnly) {
			return nil, syscall.EROFS
		}
		return nil, syscall.Errno(f.fail(err, fmt.Sprintf("mapping inode %d at offset %d", ino.Ino, in.Pos)))
	}
	if end := out.Read.Offset + out.Read.Length; end < in.Pos+in.Count && end < ino.Size {
		f.upsertNext(req.NodeId, ino, end)
	}
	return abi.Marshal(&out), 0
}

// upsertNext pushes the mapping that starts at pos into the kernel's
// mapping cache. A failure only costs the round trip it meant to save.
func (f *FS) upsertNext(node uint64, in *ext4.Inode, pos uint64) {
	loop := f.loop.Load()
	if loop == nil {
		return
	}
	m, err := f.maps.Map(in, pos, in.Size-pos)
	if err != nil {
		return
	}
	r := m.Reply(f.iomapDev)
	msg := abi.UpsertMappings{NodeID: node, AttrIno: uint64(in.Ino), Read: r.Read, Write: r.Write}
	if err := loop.Notify(abi.NotifyIomapUpsertMappings, abi.Marshal(&msg)); err != nil && f.debug {
		f.logf("IOMAP_UPSERT_MAPPINGS for inode %d at %d: %v", in.Ino, pos, err)
	}
}

// ext4MaxBytes is s_maxbytes as the kernel's ext4 computes it
// (ext4_max_size): extents address 2^32-1 blocks, and without huge_file
// i_blocks, a 32-bit count of 512-byte sectors, limits the size further.
func ext4MaxBytes(sb *ext4.Superblock) int64 {
	bits := uint(10 + sb.LogBlockSize)
	upper := uint64(abi.MaxLFSFileSize)
	if !sb.HasRoCompat(ext4.RoCompatHugeFile) {
		upper = (1<<32 - 1) >> (bits - 9) << bits
	}
	return int64(min(uint64(1<<32-1)<<bits, upper))
}
