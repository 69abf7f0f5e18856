package abi

import (
	"encoding/binary"
	"fmt"
)

// The FUSE iomap wire ABI.
//
// Every number of this interface is in this file, and nowhere else. They
// come from the newest public version of the patch series (the fuse-iomap
// branch of Darrick J. Wong's kernel tree, FUSE_KERNEL_MINOR_VERSION 99, a
// placeholder: the interface is in no released kernel). They moved between
// postings (an earlier RFC used INIT flag bits 44/45, notification codes
// 9/10, a flat 48-byte begin reply and PURE_OVERWRITE = 0xFFFF), so they
// may move again: a server must negotiate (use iomap only when the kernel
// offers InitIomap in FUSE_INIT, and only after FUSE_DEV_IOC_ADD_IOMAP
// succeeded) and must fall back to classic FUSE I/O otherwise. When the
// branch changes, this file (and its size tests) is what changes.
//
// All structures are little-endian, naturally aligned, with no hidden
// padding; each has a Go struct of the same field order whose
// unsafe.Sizeof and binary.Size are the wire size (abi_test.go checks it),
// and is encoded and decoded field by field with explicit offsets.

// KernelMinorVersion is FUSE_KERNEL_MINOR_VERSION of the fuse-iomap
// branch. It is a placeholder (the real number will be whatever the
// release after the merge uses), so never compare against it: negotiate
// with InitIomap instead.
const KernelMinorVersion = 99

// INIT negotiation.
const (
	// InitIomap is FUSE_IOMAP in the 64-bit INIT flags (flags | flags2<<32).
	// The kernel offers it only when iomap is enabled and the connection
	// was granted iomap (FUSE_DEV_IOC_ADD_IOMAP by a task with
	// CAP_SYS_RAWIO); the server echoes it to accept.
	InitIomap uint64 = 1 << 43
	// InitFlags2Iomap is the same bit as seen in fuse_init_in.flags2 and
	// fuse_init_out.flags2.
	InitFlags2Iomap uint32 = 1 << (43 - 32)
)

// ioctls on /dev/fuse. The numbers use the generic Linux _IOC encoding
// (dir<<30 | size<<16 | type<<8 | nr, with _IOC_WRITE 1 and _IOC_READ 2);
// abi_test.go recomputes them from the encoding and the structure sizes.
const (
	// DevIocMagic is FUSE_DEV_IOC_MAGIC, the ioctl type of /dev/fuse.
	DevIocMagic = 229
	// DevIocBackingOpen is FUSE_DEV_IOC_BACKING_OPEN,
	// _IOW(229, 1, struct fuse_backing_map): registers a block device (with
	// BackingMap.Flags = BackingTypeIomap) and returns its device cookie.
	DevIocBackingOpen = 0x4010E501
	// DevIocSyncInit is FUSE_DEV_IOC_SYNC_INIT, _IO(229, 3) (Linux 6.18):
	// with it, mount(2) / FSCONFIG_CMD_CREATE waits for the INIT reply.
	DevIocSyncInit = 0xE503
	// DevIocIomapSupport is FUSE_DEV_IOC_IOMAP_SUPPORT,
	// _IOR(229, 99, struct fuse_iomap_support): what iomap features the
	// kernel has (IomapSupport).
	DevIocIomapSupport = 0x8010E563
	// DevIocAddIomap is FUSE_DEV_IOC_ADD_IOMAP, _IO(229, 101): a privileged
	// helper grants iomap to the connection before handing the descriptor
	// to an unprivileged server. A kernel without iomap answers ENOTTY.
	DevIocAddIomap = 0xE565
)

// IomapSupport flags (FUSE_IOMAP_SUPPORT_*), from DevIocIomapSupport.
const (
	SupportFileIO uint64 = 1 << 0
	SupportAtomic uint64 = 1 << 1
)

// BackingTypeIomap is FUSE_BACKING_TYPE_IOMAP, for BackingMap.Flags: the
// descriptor is a block device that mappings will address.
const BackingTypeIomap uint32 = 1

// Device cookies (fuse_iomap_io.dev).
const (
	// DevNull is FUSE_IOMAP_DEV_NULL: no device (holes, inline data).
	DevNull uint32 = 0
	// DevFuseblk is the cookie of the mount's own block device on a
	// fuseblk mount, registered by the kernel itself.
	DevFuseblk uint32 = 1
)

// Opcodes of the iomap requests (fuse_in_header.opcode).
const (
	OpFreezeFS    uint32 = 4089 // FUSE_FREEZE_FS: in {u64 unlinked}, no reply body
	OpUnfreezeFS  uint32 = 4090 // FUSE_UNFREEZE_FS: no body either way
	OpShutdownFS  uint32 = 4091 // FUSE_SHUTDOWN_FS: in {u64 flags}, no reply body
	OpIomapConfig uint32 = 4092 // FUSE_IOMAP_CONFIG: ConfigIn -> ConfigOut, nodeid 0, during INIT
	OpIomapIoend  uint32 = 4093 // FUSE_IOMAP_IOEND: IoendIn -> IoendOut
	OpIomapBegin  uint32 = 4094 // FUSE_IOMAP_BEGIN: BeginIn -> BeginOut
	OpIomapEnd    uint32 = 4095 // FUSE_IOMAP_END: EndIn, no reply body
)

// fuse_attr.flags of this version. Submount and Dax are released ABI and
// listed so that their bits are not reused by mistake.
const (
	AttrSubmount  uint32 = 1 << 0 // FUSE_ATTR_SUBMOUNT
	AttrDax       uint32 = 1 << 1 // FUSE_ATTR_DAX
	AttrExclusive uint32 = 1 << 2 // FUSE_ATTR_EXCLUSIVE: only this mount changes the file (iomap needs it)
	AttrIomap     uint32 = 1 << 3 // FUSE_ATTR_IOMAP: this regular file does its I/O through iomap
	AttrAtomic    uint32 = 1 << 4 // FUSE_ATTR_ATOMIC: untorn writes
	AttrSync      uint32 = 1 << 5 // FUSE_ATTR_SYNC
	AttrImmutable uint32 = 1 << 6 // FUSE_ATTR_IMMUTABLE
	AttrAppend    uint32 = 1 << 7 // FUSE_ATTR_APPEND
)

// Mapping types (fuse_iomap_io.type). The first five are the kernel's
// IOMAP_* types; the last three are instructions that exist only on the
// FUSE wire.
const (
	TypeHole      uint16 = 0 // no storage: reads as zeros
	TypeDelalloc  uint16 = 1 // reserved but not yet allocated
	TypeMapped    uint16 = 2 // stored at Addr on device Dev
	TypeUnwritten uint16 = 3 // allocated at Addr but reads as zeros (fallocate)
	TypeInline    uint16 = 4 // stored in the inode: the kernel fetches it with FUSE_READ
	// TypeNoCache (FUSE_IOMAP_TYPE_NOCACHE) tells the kernel not to cache
	// an upserted mapping; never valid in a BEGIN reply.
	TypeNoCache uint16 = 253
	// TypeRetryCache (FUSE_IOMAP_TYPE_RETRY_CACHE): the server has upserted
	// the mapping; the kernel looks in its mapping cache again.
	TypeRetryCache uint16 = 254
	// TypePureOverwrite (FUSE_IOMAP_TYPE_PURE_OVERWRITE), write slot only:
	// write in place through the read mapping. A read-only server puts it
	// in the write slot of every reply.
	TypePureOverwrite uint16 = 255
)

// Mapping flags (fuse_iomap_io.flags).
const (
	FlagNew          uint16 = 1 << 0
	FlagDirty        uint16 = 1 << 1
	FlagShared       uint16 = 1 << 2
	FlagMerged       uint16 = 1 << 3
	FlagBoundary     uint16 = 1 << 4
	FlagAnonWrite    uint16 = 1 << 5
	FlagAtomicBio    uint16 = 1 << 6
	FlagWantIomapEnd uint16 = 1 << 7
	// FlagsBegin is every flag a server may set in a mapping it sends
	// (FUSE_IOMAP_F_ALL); the kernel rejects any other bit.
	FlagsBegin uint16 = 1<<8 - 1
	// FlagSizeChanged and FlagStale appear only in FUSE_IOMAP_END.
	FlagSizeChanged uint16 = 1 << 8
	FlagStale       uint16 = 1 << 9
)

// Operation flags (opflags of BeginIn and EndIn). A buffered read sends 0,
// an O_DIRECT read OpDirect, FIEMAP / SEEK_DATA / SEEK_HOLE / bmap
// OpReport, a buffered write OpWrite, an O_DIRECT write or page cache
// writeback OpDirect|OpWrite (writeback may add OpWriteback).
const (
	OpWrite         uint32 = 1 << 0
	OpZero          uint32 = 1 << 1
	OpReport        uint32 = 1 << 2
	OpFault         uint32 = 1 << 3
	OpDirect        uint32 = 1 << 4
	OpNowait        uint32 = 1 << 5
	OpOverwriteOnly uint32 = 1 << 6
	OpUnshare       uint32 = 1 << 7
	OpDax           uint32 = 1 << 8
	OpAtomic        uint32 = 1 << 9
	OpDontCache     uint32 = 1 << 10
	OpSwapfile      uint32 = 1 << 30
	OpWriteback     uint32 = 1 << 31
	// OpWriteMask is every operation that changes the file
	// (fuse_is_iomap_file_write): the ones a read-only server refuses.
	OpWriteMask = OpWrite | OpZero | OpUnshare | OpWriteback
)

// ioend flags (IoendIn.Flags).
const (
	IoendShared    uint32 = 1 << 0
	IoendUnwritten uint32 = 1 << 1
	IoendBoundary  uint32 = 1 << 2
	IoendDirect    uint32 = 1 << 3
	IoendAppend    uint32 = 1 << 4
	IoendWriteback uint32 = 1 << 5
	IoendSwapoff   uint32 = 1 << 6
)

// Config flags (ConfigIn.Flags, ConfigOut.Flags): which fields are set.
const (
	ConfigSID           uint64 = 1 << 0
	ConfigUUID          uint64 = 1 << 1
	ConfigBlockSize     uint64 = 1 << 2
	ConfigMaxLinks      uint64 = 1 << 3
	ConfigTime          uint64 = 1 << 4
	ConfigMaxBytes      uint64 = 1 << 5
	ConfigCacheMaxBytes uint64 = 1 << 6
	// ConfigAll is every flag the kernel knows; any other bit in a reply
	// fails the mount.
	ConfigAll = ConfigSID | ConfigUUID | ConfigBlockSize | ConfigMaxLinks | ConfigTime | ConfigMaxBytes | ConfigCacheMaxBytes
)

// Notification codes (unsolicited writes to /dev/fuse with unique 0 and
// the code in fuse_out_header.error).
const (
	NotifyIomapDevInval       int32 = 99  // DevInval
	NotifyIomapUpsertMappings int32 = 100 // UpsertMappings
	NotifyIomapInvalMappings  int32 = 101 // InvalMappings
)

// Address and size limits.
const (
	// NullAddr is FUSE_IOMAP_NULL_ADDR: the addr of a mapping that has no
	// device range (holes, inline data, pure overwrite).
	NullAddr uint64 = ^uint64(0)
	// InvalToEOF as an InvalMappings length invalidates to end of file.
	InvalToEOF uint64 = ^uint64(0)
	// MaxLFSFileSize is MAX_LFS_FILESIZE on 64-bit kernels: the largest
	// file offset, and the kernel's default s_maxbytes.
	MaxLFSFileSize uint64 = 1<<63 - 1
)

// Kernel limits the reply checks (check.go) apply.
const (
	// devCookieLimit: fuse_iomap_find_bdev looks up only cookies below
	// INT_MAX (the kernel hands out 1..1024).
	devCookieLimit = 1<<31 - 1
	// maxBlockSize is BLK_MAX_BLOCK_SIZE, the largest s_blocksize a
	// config reply may set.
	maxBlockSize = 64 << 10
	nsecPerSec   = 1000000000
)

// Wire sizes of the structures, in bytes.
const (
	SizeIomapIO        = 32
	SizeBeginIn        = 32
	SizeBeginOut       = 64
	SizeEndIn          = 72
	SizeIoendIn        = 48
	SizeIoendOut       = 8
	SizeConfigIn       = 64
	SizeConfigOut      = 104
	SizeUpsertMappings = 80
	SizeInvalMappings  = 48
	SizeDevInval       = 24
	SizeIomapSupport   = 16
	SizeBackingMap     = 16
)

// IomapIO is struct fuse_iomap_io: one mapping on the wire.
type IomapIO struct {
	Offset uint64 // file offset, bytes
	Length uint64 // bytes
	Addr   uint64 // device offset, bytes; NullAddr when not valid
	Type   uint16 // Type*
	Flags  uint16 // Flag*
	Dev    uint32 // device cookie; DevNull for none
}

// BeginIn is struct fuse_iomap_begin_in, the body of FUSE_IOMAP_BEGIN.
type BeginIn struct {
	OpFlags  uint32 // Op*
	Reserved uint32
	AttrIno  uint64 // fuse_attr.ino the server gave the inode
	Pos      uint64 // first byte the kernel needs mapped
	Count    uint64 // bytes from Pos the kernel would like mapped
}

// BeginOut is struct fuse_iomap_begin_out, the reply to FUSE_IOMAP_BEGIN:
// the mapping to read through and the one to write through.
type BeginOut struct {
	Read  IomapIO
	Write IomapIO
}

// EndIn is struct fuse_iomap_end_in, the body of FUSE_IOMAP_END (sent
// only for mappings with FlagWantIomapEnd).
type EndIn struct {
	OpFlags  uint32
	Reserved uint32
	AttrIno  uint64
	Pos      uint64
	Count    uint64
	Written  int64
	Map      IomapIO
}

// IoendIn is struct fuse_iomap_ioend_in, the body of FUSE_IOMAP_IOEND
// (an I/O completed with an error, or over unwritten, shared or appended
// space).
type IoendIn struct {
	Flags   uint32 // Ioend*
	Error   int32  // negative errno or 0
	AttrIno uint64
	Pos     uint64
	NewAddr uint64
	Written uint64
	Dev     uint32
	Pad     uint32
}

// IoendOut is struct fuse_iomap_ioend_out: the new on-disk size.
type IoendOut struct {
	NewSize uint64
}

// ConfigIn is struct fuse_iomap_config_in, the body of FUSE_IOMAP_CONFIG.
type ConfigIn struct {
	Flags         uint64 // Config* the kernel understands
	MaxBytes      int64  // the kernel's maximum file size
	CacheMaxBytes uint32 // default size of the per-inode mapping cache
	Zero          uint32
	Padding       [5]uint64
}

// ConfigOut is struct fuse_iomap_config_out, the reply to
// FUSE_IOMAP_CONFIG. Flags say which fields are set.
type ConfigOut struct {
	Flags         uint64
	SID           [32]byte // s_id, the name in kernel messages
	UUID          [16]byte
	UUIDLen       uint8 // at most 16
	Pad           [3]uint8
	BlockSize     uint32
	MaxLinks      uint32
	TimeGran      uint32 // nanoseconds
	TimeMin       int64  // seconds
	TimeMax       int64  // seconds
	MaxBytes      int64
	CacheMaxBytes uint32
	TailPad       uint32 // the 4 bytes of tail padding of the C struct
}

// UpsertMappings is the body of the NotifyIomapUpsertMappings
// notification: mappings the kernel should put in its per-inode cache.
type UpsertMappings struct {
	NodeID  uint64
	AttrIno uint64
	Read    IomapIO
	Write   IomapIO
}

// InvalMappings is the body of the NotifyIomapInvalMappings notification.
// A length of InvalToEOF reaches the end of file; 0 ignores that range.
type InvalMappings struct {
	NodeID      uint64
	AttrIno     uint64
	ReadOffset  uint64
	ReadLength  uint64
	WriteOffset uint64
	WriteLength uint64
}

// DevInval is the body of the NotifyIomapDevInval notification: the page
// cache of a byte range of a registered device is stale.
type DevInval struct {
	Dev      uint32
	Reserved uint32
	Offset   uint64
	Length   uint64
}

// IomapSupport is struct fuse_iomap_support, filled by
// DevIocIomapSupport.
type IomapSupport struct {
	Flags   uint64 // Support*
	Padding uint64
}

// BackingMap is struct fuse_backing_map, the argument of
// DevIocBackingOpen.
type BackingMap struct {
	Fd      int32
	Flags   uint32 // BackingTypeIomap
	Padding uint64
}

// Message is implemented by every wire structure of this file, so that
// Marshal and Unmarshal serve them all.
type Message interface {
	// WireSize is the size of the structure on the wire.
	WireSize() int
	put(b []byte)
	get(b []byte)
}

// Marshal returns the wire form of m.
func Marshal(m Message) []byte {
	b := make([]byte, m.WireSize())
	m.put(b)
	return b
}

// Unmarshal decodes m from the start of b. A buffer shorter than the
// structure is an error (never a panic): a peer that sends less than the
// structure is broken or hostile. Bytes past the structure are ignored, as
// the kernel ignores the tail of a larger struct from a newer peer; callers
// that need an exact size compare len(b) with WireSize themselves.
func Unmarshal(b []byte, m Message) error {
	if len(b) < m.WireSize() {
		return fmt.Errorf("iomap: %T needs %d bytes, got %d", m, m.WireSize(), len(b))
	}
	m.get(b)
	return nil
}

var le = binary.LittleEndian

func putIO(b []byte, x *IomapIO) {
	le.PutUint64(b[0:], x.Offset)
	le.PutUint64(b[8:], x.Length)
	le.PutUint64(b[16:], x.Addr)
	le.PutUint16(b[24:], x.Type)
	le.PutUint16(b[26:], x.Flags)
	le.PutUint32(b[28:], x.Dev)
}

func getIO(b []byte, x *IomapIO) {
	_ = b[SizeIomapIO-1]
	x.Offset = le.Uint64(b[0:])
	x.Length = le.Uint64(b[8:])
	x.Addr = le.Uint64(b[16:])
	x.Type = le.Uint16(b[24:])
	x.Flags = le.Uint16(b[26:])
	x.Dev = le.Uint32(b[28:])
}

// WireSize returns SizeIomapIO.
func (x *IomapIO) WireSize() int { return SizeIomapIO }
func (x *IomapIO) put(b []byte)  { putIO(b, x) }
func (x *IomapIO) get(b []byte)  { getIO(b, x) }

// WireSize returns SizeBeginIn.
func (x *BeginIn) WireSize() int { return SizeBeginIn }
func (x *BeginIn) put(b []byte) {
	le.PutUint32(b[0:], x.OpFlags)
	le.PutUint32(b[4:], x.Reserved)
	le.PutUint64(b[8:], x.AttrIno)
	le.PutUint64(b[16:], x.Pos)
	le.PutUint64(b[24:], x.Count)
}
func (x *BeginIn) get(b []byte) {
	_ = b[SizeBeginIn-1]
	x.OpFlags = le.Uint32(b[0:])
	x.Reserved = le.Uint32(b[4:])
	x.AttrIno = le.Uint64(b[8:])
	x.Pos = le.Uint64(b[16:])
	x.Count = le.Uint64(b[24:])
}

// WireSize returns SizeBeginOut.
func (x *BeginOut) WireSize() int { return SizeBeginOut }
func (x *BeginOut) put(b []byte) {
	putIO(b[0:], &x.Read)
	putIO(b[32:], &x.Write)
}
func (x *BeginOut) get(b []byte) {
	_ = b[SizeBeginOut-1]
	getIO(b[0:], &x.Read)
	getIO(b[32:], &x.Write)
}

// WireSize returns SizeEndIn.
func (x *EndIn) WireSize() int { return SizeEndIn }
func (x *EndIn) put(b []byte) {
	le.PutUint32(b[0:], x.OpFlags)
	le.PutUint32(b[4:], x.Reserved)
	le.PutUint64(b[8:], x.AttrIno)
	le.PutUint64(b[16:], x.Pos)
	le.PutUint64(b[24:], x.Count)
	le.PutUint64(b[32:], uint64(x.Written))
	putIO(b[40:], &x.Map)
}
func (x *EndIn) get(b []byte) {
	_ = b[SizeEndIn-1]
	x.OpFlags = le.Uint32(b[0:])
	x.Reserved = le.Uint32(b[4:])
	x.AttrIno = le.Uint64(b[8:])
	x.Pos = le.Uint64(b[16:])
	x.Count = le.Uint64(b[24:])
	x.Written = int64(le.Uint64(b[32:]))
	getIO(b[40:], &x.Map)
}

// WireSize returns SizeIoendIn.
func (x *IoendIn) WireSize() int { return SizeIoendIn }
func (x *IoendIn) put(b []byte) {
	le.PutUint32(b[0:], x.Flags)
	le.PutUint32(b[4:], uint32(x.Error))
	le.PutUint64(b[8:], x.AttrIno)
	le.PutUint64(b[16:], x.Pos)
	le.PutUint64(b[24:], x.NewAddr)
	le.PutUint64(b[32:], x.Written)
	le.PutUint32(b[40:], x.Dev)
	le.PutUint32(b[44:], x.Pad)
}
func (x *IoendIn) get(b []byte) {
	_ = b[SizeIoendIn-1]
	x.Flags = le.Uint32(b[0:])
	x.Error = int32(le.Uint32(b[4:]))
	x.AttrIno = le.Uint64(b[8:])
	x.Pos = le.Uint64(b[16:])
	x.NewAddr = le.Uint64(b[24:])
	x.Written = le.Uint64(b[32:])
	x.Dev = le.Uint32(b[40:])
	x.Pad = le.Uint32(b[44:])
}

// WireSize returns SizeIoendOut.
func (x *IoendOut) WireSize() int { return SizeIoendOut }
func (x *IoendOut) put(b []byte)  { le.PutUint64(b[0:], x.NewSize) }
func (x *IoendOut) get(b []byte)  { x.NewSize = le.Uint64(b[0:SizeIoendOut]) }

// WireSize returns SizeConfigIn.
func (x *ConfigIn) WireSize() int { return SizeConfigIn }
func (x *ConfigIn) put(b []byte) {
	le.PutUint64(b[0:], x.Flags)
	le.PutUint64(b[8:], uint64(x.MaxBytes))
	le.PutUint32(b[16:], x.CacheMaxBytes)
	le.PutUint32(b[20:], x.Zero)
	for i, v := range x.Padding {
		le.PutUint64(b[24+8*i:], v)
	}
}
func (x *ConfigIn) get(b []byte) {
	_ = b[SizeConfigIn-1]
	x.Flags = le.Uint64(b[0:])
	x.MaxBytes = int64(le.Uint64(b[8:]))
	x.CacheMaxBytes = le.Uint32(b[16:])
	x.Zero = le.Uint32(b[20:])
	for i := range x.Padding {
		x.Padding[i] = le.Uint64(b[24+8*i:])
	}
}

// WireSize returns SizeConfigOut.
func (x *ConfigOut) WireSize() int { return SizeConfigOut }
func (x *ConfigOut) put(b []byte) {
	le.PutUint64(b[0:], x.Flags)
	copy(b[8:40], x.SID[:])
	copy(b[40:56], x.UUID[:])
	b[56] = x.UUIDLen
	copy(b[57:60], x.Pad[:])
	le.PutUint32(b[60:], x.BlockSize)
	le.PutUint32(b[64:], x.MaxLinks)
	le.PutUint32(b[68:], x.TimeGran)
	le.PutUint64(b[72:], uint64(x.TimeMin))
	le.PutUint64(b[80:], uint64(x.TimeMax))
	le.PutUint64(b[88:], uint64(x.MaxBytes))
	le.PutUint32(b[96:], x.CacheMaxBytes)
	le.PutUint32(b[100:], x.TailPad)
}
func (x *ConfigOut) get(b []byte) {
	_ = b[SizeConfigOut-1]
	x.Flags = le.Uint64(b[0:])
	copy(x.SID[:], b[8:40])
	copy(x.UUID[:], b[40:56])
	x.UUIDLen = b[56]
	copy(x.Pad[:], b[57:60])
	x.BlockSize = le.Uint32(b[60:])
	x.MaxLinks = le.Uint32(b[64:])
	x.TimeGran = le.Uint32(b[68:])
	x.TimeMin = int64(le.Uint64(b[72:]))
	x.TimeMax = int64(le.Uint64(b[80:]))
	x.MaxBytes = int64(le.Uint64(b[88:]))
	x.CacheMaxBytes = le.Uint32(b[96:])
	x.TailPad = le.Uint32(b[100:])
}

// WireSize returns SizeUpsertMappings.
func (x *UpsertMappings) WireSize() int { return SizeUpsertMappings }
func (x *UpsertMappings) put(b []byte) {
	le.PutUint64(b[0:], x.NodeID)
	le.PutUint64(b[8:], x.AttrIno)
	putIO(b[16:], &x.Read)
	putIO(b[48:], &x.Write)
}
func (x *UpsertMappings) get(b []byte) {
	_ = b[SizeUpsertMappings-1]
	x.NodeID = le.Uint64(b[0:])
	x.AttrIno = le.Uint64(b[8:])
	getIO(b[16:], &x.Read)
	getIO(b[48:], &x.Write)
}

// WireSize returns SizeInvalMappings.
func (x *InvalMappings) WireSize() int { return SizeInvalMappings }
func (x *InvalMappings) put(b []byte) {
	for i, v := range [...]uint64{x.NodeID, x.AttrIno, x.ReadOffset, x.ReadLength, x.WriteOffset, x.WriteLength} {
		le.PutUint64(b[8*i:], v)
	}
}
func (x *InvalMappings) get(b []byte) {
	_ = b[SizeInvalMappings-1]
	for i, p := range [...]*uint64{&x.NodeID, &x.AttrIno, &x.ReadOffset, &x.ReadLength, &x.WriteOffset, &x.WriteLength} {
		*p = le.Uint64(b[8*i:])
	}
}

// WireSize returns SizeDevInval.
func (x *DevInval) WireSize() int { return SizeDevInval }
func (x *DevInval) put(b []byte) {
	le.PutUint32(b[0:], x.Dev)
	le.PutUint32(b[4:], x.Reserved)
	le.PutUint64(b[8:], x.Offset)
	le.PutUint64(b[16:], x.Length)
}
func (x *DevInval) get(b []byte) {
	_ = b[SizeDevInval-1]
	x.Dev = le.Uint32(b[0:])
	x.Reserved = le.Uint32(b[4:])
	x.Offset = le.Uint64(b[8:])
	x.Length = le.Uint64(b[16:])
}

// WireSize returns SizeIomapSupport.
func (x *IomapSupport) WireSize() int { return SizeIomapSupport }
func (x *IomapSupport) put(b []byte) {
	le.PutUint64(b[0:], x.Flags)
	le.PutUint64(b[8:], x.Padding)
}
func (x *IomapSupport) get(b []byte) {
	_ = b[SizeIomapSupport-1]
	x.Flags = le.Uint64(b[0:])
	x.Padding = le.Uint64(b[8:])
}

// WireSize returns SizeBackingMap.
func (x *BackingMap) WireSize() int { return SizeBackingMap }
func (x *BackingMap) put(b []byte) {
	le.PutUint32(b[0:], uint32(x.Fd))
	le.PutUint32(b[4:], x.Flags)
	le.PutUint64(b[8:], x.Padding)
}
func (x *BackingMap) get(b []byte) {
	_ = b[SizeBackingMap-1]
	x.Fd = int32(le.Uint32(b[0:]))
	x.Flags = le.Uint32(b[4:])
	x.Padding = le.Uint64(b[8:])
}

// ReadOnlyReply is a FUSE_IOMAP_BEGIN reply for a read-only server: read,
// the mapping to read through, and PURE_OVERWRITE over the same range in
// the write slot (which must also cover the position asked for, and which
// a read never uses).
func ReadOnlyReply(read IomapIO) BeginOut {
	return BeginOut{
		Read:  read,
		Write: IomapIO{Offset: read.Offset, Length: read.Length, Addr: NullAddr, Type: TypePureOverwrite},
	}
}
