package abi

import (
	"fmt"
	"math/bits"
)

// ReplyError is a reply the kernel would refuse. In a FUSE_IOMAP_BEGIN
// reply any failure makes the I/O fail with EIO (EFSCORRUPTED inside the
// kernel); in a FUSE_IOMAP_CONFIG reply it fails the mount.
type ReplyError struct {
	// Slot is the mapping concerned: "read", "write", or "" for checks on
	// the reply as a whole.
	Slot string
	// Rule names the check that failed, in a stable form tests can match
	// (e.g. "length-zero", "pos-not-covered", "uuid-len").
	Rule string
	// Detail gives the values involved.
	Detail string
}

// Error says which mapping failed which check.
func (e *ReplyError) Error() string {
	s := "iomap: reply refused: "
	if e.Slot != "" {
		s += e.Slot + " mapping: "
	}
	return s + e.Rule + ": " + e.Detail
}

func refuse(slot, rule, format string, args ...any) error {
	return &ReplyError{Slot: slot, Rule: rule, Detail: fmt.Sprintf(format, args...)}
}

// BeginCheck is the kernel-side state a FUSE_IOMAP_BEGIN reply is checked
// against: what fuse_iomap_begin_validate, fuse_iomap_check_mapping and
// fuse_iomap_find_bdev know about the inode and the connection.
type BeginCheck struct {
	// BlockSize is i_blocksize of the inode (fuse_attr.blksize): offsets
	// and lengths must be multiples of it. It must be a power of two.
	BlockSize uint32
	// MaxBytes is the superblock's s_maxbytes (MaxLFSFileSize unless the
	// config reply lowered it); 0 means MaxLFSFileSize.
	MaxBytes uint64
	// CachesMappings says the inode has a mapping cache, without which
	// TypeRetryCache is refused.
	CachesMappings bool
	// ValidDev reports whether a device cookie names a registered device.
	// Nil means none is registered.
	ValidDev func(uint32) bool
}

// CheckBeginReply applies to out, the reply to the FUSE_IOMAP_BEGIN
// request in, exactly the checks the kernel makes before using it, for an
// inode of the given block size on a connection where validDev tells
// registered device cookies. It returns a *ReplyError naming the first
// check that failed, or nil if the kernel would accept the reply. The
// kernel's s_maxbytes is taken as MaxLFSFileSize and the inode as having no
// mapping cache; BeginCheck.Check takes them as parameters.
func CheckBeginReply(in BeginIn, out BeginOut, blockSize uint32, validDev func(uint32) bool) error {
	return BeginCheck{BlockSize: blockSize, ValidDev: validDev}.Check(in, out)
}

// Check applies the kernel's checks, in the kernel's order, to the reply
// out to the request in. The checks are those of the fuse-iomap branch
// (see abi.go), including what the newest branch requires of
// PURE_OVERWRITE (dev 0 and NullAddr, no flags).
func (c BeginCheck) Check(in BeginIn, out BeginOut) error {
	if err := c.checkMapping(&out.Read, "read"); err != nil {
		return err
	}
	if err := c.checkMapping(&out.Write, "write"); err != nil {
		return err
	}
	// A BEGIN reply needs real mappings or "retry from the cache"; "do
	// not cache" only makes sense in an upsert.
	for _, s := range []struct {
		name string
		m    *IomapIO
	}{{"read", &out.Read}, {"write", &out.Write}} {
		if s.m.Type == TypeNoCache {
			return refuse(s.name, "nocache-in-begin", "type NOCACHE (%d) is only valid in an upsert notification", TypeNoCache)
		}
	}
	// Both mappings must contain the first byte asked for. check_mapping
	// has ruled out a zero length and an overflowing end.
	for _, s := range []struct {
		name string
		m    *IomapIO
	}{{"read", &out.Read}, {"write", &out.Write}} {
		if s.m.Offset > in.Pos || s.m.Offset+s.m.Length <= in.Pos {
			return refuse(s.name, "pos-not-covered", "range [%d, %d) does not contain pos %d", s.m.Offset, s.m.Offset+s.m.Length, in.Pos)
		}
	}
	// Atomic writes ask the server for the mapping every time: they never
	// use the cache, and need the server to promise an untorn bio.
	if in.OpFlags&OpAtomic != 0 {
		if out.Read.Type == TypeRetryCache || out.Write.Type == TypeRetryCache {
			return refuse("", "retry-cache-uncached-op", "RETRY_CACHE answers an atomic operation, which bypasses the cache")
		}
		w, slot := &out.Write, "write"
		if w.Type == TypePureOverwrite {
			w, slot = &out.Read, "read"
		}
		if w.Type != TypeMapped && w.Type != TypeUnwritten {
			return refuse(slot, "atomic-not-mapped", "an atomic write needs a MAPPED or UNWRITTEN mapping, got type %d", w.Type)
		}
		if w.Flags&FlagAtomicBio == 0 {
			return refuse(slot, "atomic-no-flag", "an atomic write needs the ATOMIC_BIO flag")
		}
	}
	// "Retry the cache" sends the kernel back to its cache: the device
	// fields are not used.
	if out.Read.Type == TypeRetryCache {
		return nil
	}
	if err := c.checkDev(&out.Read, "read"); err != nil {
		return err
	}
	if in.OpFlags&OpWriteMask != 0 && out.Write.Type != TypePureOverwrite {
		if err := c.checkDev(&out.Write, "write"); err != nil {
			return err
		}
	}
	return nil
}

// checkMapping is fuse_iomap_check_mapping.
func (c BeginCheck) checkMapping(m *IomapIO, slot string) error {
	switch m.Type {
	case TypeHole, TypeDelalloc, TypeMapped, TypeUnwritten, TypeInline, TypePureOverwrite, TypeRetryCache, TypeNoCache:
	default:
		return refuse(slot, "type-unknown", "unknown mapping type %d", m.Type)
	}
	if m.Flags&^FlagsBegin != 0 {
		return refuse(slot, "flags-unknown", "flags 0x%x include bits a server may not set (0x%x)", m.Flags, m.Flags&^FlagsBegin)
	}
	if m.Length == 0 {
		return refuse(slot, "length-zero", "length is zero")
	}
	bs := uint64(c.BlockSize)
	if bs == 0 || bs&(bs-1) != 0 {
		// The kernel's i_blocksize is always a power of two; a caller
		// passing something else has a bug, which must not look like a
		// valid reply.
		return refuse(slot, "block-size", "block size %d is not a power of two", c.BlockSize)
	}
	if m.Offset&(bs-1) != 0 {
		return refuse(slot, "offset-unaligned", "offset %d is not a multiple of the block size %d", m.Offset, bs)
	}
	if m.Length&(bs-1) != 0 {
		return refuse(slot, "length-unaligned", "length %d is not a multiple of the block size %d", m.Length, bs)
	}
	if _, carry := bits.Add64(m.Offset, m.Length, 0); carry != 0 {
		return refuse(slot, "range-overflow", "offset %d + length %d overflows", m.Offset, m.Length)
	}
	maxBytes := c.MaxBytes
	if maxBytes == 0 {
		maxBytes = MaxLFSFileSize
	}
	if m.Offset >= maxBytes {
		return refuse(slot, "offset-past-maxbytes", "offset %d is at or past s_maxbytes %d", m.Offset, maxBytes)
	}
	noDevice := func(what string) error {
		if m.Dev != DevNull {
			return refuse(slot, "dev-not-null", "a %s mapping has device cookie %d, want 0", what, m.Dev)
		}
		if m.Addr != NullAddr {
			return refuse(slot, "addr-not-null", "a %s mapping has address %d, want NULL_ADDR", what, m.Addr)
		}
		return nil
	}
	noState := func(what string) error {
		if m.Flags != 0 {
			return refuse(slot, "flags-not-zero", "a %s mapping has flags 0x%x, want none", what, m.Flags)
		}
		return noDevice(what)
	}
	switch m.Type {
	case TypeMapped, TypeUnwritten:
		if m.Dev == DevNull {
			return refuse(slot, "dev-null", "a mapping backed by storage (type %d) has no device cookie", m.Type)
		}
		if m.Addr == NullAddr {
			return refuse(slot, "addr-null", "a mapping backed by storage (type %d) has NULL_ADDR", m.Type)
		}
	case TypeHole, TypeDelalloc, TypeInline:
		if err := noDevice(TypeName(m.Type)); err != nil {
			return err
		}
	case TypePureOverwrite:
		if slot != "write" {
			return refuse(slot, "pure-overwrite-in-read", "PURE_OVERWRITE is only valid as the write mapping")
		}
		if err := noState("PURE_OVERWRITE"); err != nil {
			return err
		}
	case TypeRetryCache:
		if !c.CachesMappings {
			return refuse(slot, "retry-cache-no-cache", "RETRY_CACHE for an inode without a mapping cache")
		}
		if err := noState("RETRY_CACHE"); err != nil {
			return err
		}
	case TypeNoCache:
		if err := noState("NOCACHE"); err != nil {
			return err
		}
	}
	if m.Addr != NullAddr {
		if _, carry := bits.Add64(m.Addr, m.Length, 0); carry != 0 {
			return refuse(slot, "addr-overflow", "address %d + length %d overflows", m.Addr, m.Length)
		}
	}
	return nil
}

// checkDev is fuse_iomap_find_bdev: a mapping backed by storage must name
// a registered device (cookies are positive ints).
func (c BeginCheck) checkDev(m *IomapIO, slot string) error {
	if m.Type != TypeMapped && m.Type != TypeUnwritten {
		return nil
	}
	if m.Dev >= devCookieLimit || c.ValidDev == nil || !c.ValidDev(m.Dev) {
		return refuse(slot, "dev-unregistered", "device cookie %d is not registered", m.Dev)
	}
	return nil
}

// TypeName names a mapping type, for messages.
func TypeName(t uint16) string {
	switch t {
	case TypeHole:
		return "HOLE"
	case TypeDelalloc:
		return "DELALLOC"
	case TypeMapped:
		return "MAPPED"
	case TypeUnwritten:
		return "UNWRITTEN"
	case TypeInline:
		return "INLINE"
	case TypeNoCache:
		return "NOCACHE"
	case TypeRetryCache:
		return "RETRY_CACHE"
	case TypePureOverwrite:
		return "PURE_OVERWRITE"
	}
	return fmt.Sprintf("type %d", t)
}

// CheckConfigReply applies to out, a FUSE_IOMAP_CONFIG reply, the checks
// fuse_iomap_process_config makes before using it: no unknown flag, a
// UUID of at most 16 bytes, zero padding, and, for the fields the flags
// say are set, a time granularity of 1 ns to 1 s, a maximum file size in
// [0, MAX_LFS_FILESIZE] and a block size the block layer takes (a power of
// two from 512 bytes to 64 KiB). On a fuseblk mount the kernel also
// refuses a block size below the device's logical block size, which only
// it knows. It returns a *ReplyError, or nil if the reply is accepted.
func CheckConfigReply(out ConfigOut) error {
	if out.Flags&^ConfigAll != 0 {
		return refuse("", "flags-unknown", "flags 0x%x include unknown bits 0x%x", out.Flags, out.Flags&^ConfigAll)
	}
	if int(out.UUIDLen) > len(out.UUID) {
		return refuse("", "uuid-len", "s_uuid_len %d exceeds %d", out.UUIDLen, len(out.UUID))
	}
	if out.Pad != [3]uint8{} {
		return refuse("", "pad-not-zero", "s_pad is %v, want zeros", out.Pad)
	}
	if out.Flags&ConfigTime != 0 && (out.TimeGran == 0 || out.TimeGran > nsecPerSec) {
		return refuse("", "time-gran", "s_time_gran %d is not in 1..%d ns", out.TimeGran, nsecPerSec)
	}
	if out.Flags&ConfigMaxBytes != 0 && (out.MaxBytes < 0 || uint64(out.MaxBytes) > MaxLFSFileSize) {
		return refuse("", "maxbytes", "s_maxbytes %d is not in [0, %d]", out.MaxBytes, MaxLFSFileSize)
	}
	if out.Flags&ConfigBlockSize != 0 {
		bs := out.BlockSize
		if bs < 512 || bs > maxBlockSize || bs&(bs-1) != 0 {
			return refuse("", "blocksize", "s_blocksize %d is not a power of two from 512 to %d", bs, maxBlockSize)
		}
	}
	return nil
}
