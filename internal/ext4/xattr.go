package ext4

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
)

const (
	xattrMagic      = 0xEA020000
	xattrHdrSize    = 32 // ext4_xattr_header
	xattrEntrySize  = 16 // fixed part of ext4_xattr_entry
	xattrSizeMax    = 1 << 24
	xattrIndexData  = 7 // system.data: inline data, never listed
	inlineBlockSize = 60
)

// ErrNoXattr is returned by GetXattr when the inode has no attribute of
// that name (ENODATA).
var ErrNoXattr = errors.New("ext4: no such extended attribute")

// ErrXattrNamespace is returned by GetXattr for a name in a namespace ext4
// does not store or does not expose (EOPNOTSUPP).
var ErrXattrNamespace = errors.New("ext4: extended attribute namespace not supported")

// xattrPrefixes maps e_name_index to the name prefix the kernel shows;
// indices 2 and 3 are complete names (the stored name is empty). Index 7
// (system.data) and 8 (system.richacl) have no handler in the kernel and so
// are neither listed nor readable.
var xattrPrefixes = map[uint8]string{
	1:  "user.",
	2:  "system.posix_acl_access",
	3:  "system.posix_acl_default",
	4:  "trusted.",
	6:  "security.",
	10: "gnu.",
}

// xattrEntry is one decoded ext4_xattr_entry; value is nil when the value
// lives in an EA inode (valueInum != 0).
type xattrEntry struct {
	index     uint8
	name      []byte
	value     []byte
	valueInum uint32
	valueSize uint32
}

// parseXattrEntries decodes the entry table starting at entries, with
// values addressed relative to valueBase and nothing allowed past the end
// of region, following ext4_xattr_check_entries.
func (fs *FS) parseXattrEntries(ino uint32, blk uint64, region []byte, entriesOff, valueBase int) ([]xattrEntry, error) {
	le := binary.LittleEndian
	bad := func(format string, args ...any) ([]xattrEntry, error) {
		return nil, corruptf(BadXattr, ino, blk, format, args...)
	}
	var out []xattrEntry
	off := entriesOff
	for {
		if off+4 > len(region) {
			return bad("entry table runs past the end of its area")
		}
		if le.Uint32(region[off:]) == 0 {
			break // IS_LAST_ENTRY
		}
		if off+xattrEntrySize > len(region) {
			return bad("entry at offset %d runs past the end of its area", off)
		}
		e := region[off:]
		nameLen := int(e[0])
		next := off + (xattrEntrySize+nameLen+3)&^3
		if next+4 > len(region) {
			return bad("e_name out of bounds")
		}
		name := e[xattrEntrySize : xattrEntrySize+nameLen]
		if bytes.IndexByte(name, 0) >= 0 {
			return bad("name contains a NUL byte")
		}
		x := xattrEntry{
			index:     e[1],
			name:      name,
			valueInum: le.Uint32(e[4:]),
			valueSize: le.Uint32(e[8:]),
		}
		valueOff := int(le.Uint16(e[2:]))
		if x.valueInum != 0 {
			if !fs.sb.HasIncompat(IncompatEAInode) {
				return bad("value in inode %d without the ea_inode feature", x.valueInum)
			}
			if x.valueInum == rootIno || x.valueInum < fs.sb.FirstIno || x.valueInum > fs.sb.InodesCount {
				return bad("invalid EA inode number %d", x.valueInum)
			}
		}
		if x.valueSize > xattrSizeMax {
			return bad("value size %d too large", x.valueSize)
		}
		if x.valueInum == 0 {
			if x.valueSize == 0 {
				x.value = []byte{}
			} else {
				start := valueBase + valueOff
				end := start + int(x.valueSize)
				if valueOff > len(region)-valueBase || end > len(region) || start < next+4 {
					return bad("value of %q overlaps the entries or runs out of bounds", name)
				}
				x.value = region[start:end]
			}
		}
		out = append(out, x)
		off = next
	}
	return out, nil
}

// inodeXattrs returns the entries stored in the inode body after
// i_extra_isize, or none when the inode has no room or no magic there.
func (fs *FS) inodeXattrs(in *Inode) ([]xattrEntry, error) {
	start := goodOldInoSize + int(in.ExtraIsize)
	if len(in.raw) <= goodOldInoSize || start+4 > len(in.raw) {
		return nil, nil
	}
	if binary.LittleEndian.Uint32(in.raw[start:]) != xattrMagic {
		return nil, nil
	}
	region := in.raw[start+4:]
	return fs.parseXattrEntries(in.Ino, 0, region, 0, 0)
}

// blockXattrs returns the entries of the inode's external xattr block.
func (fs *FS) blockXattrs(in *Inode) ([]xattrEntry, error) {
	if in.FileACL == 0 {
		return nil, nil
	}
	blk := in.FileACL
	if !fs.validBlock(blk) {
		return nil, corruptf(BadXattr, in.Ino, blk, "xattr block %d is outside the filesystem", blk)
	}
	b, err := fs.readBlock(blk, in.Ino)
	if err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	if le.Uint32(b[0:]) != xattrMagic || le.Uint32(b[8:]) != 1 {
		return nil, corruptf(BadXattr, in.Ino, blk, "bad xattr block header (magic 0x%08x, blocks %d)", le.Uint32(b[0:]), le.Uint32(b[8:]))
	}
	if fs.sb.HasMetadataCsum() {
		c := crc32cU64(fs.csumSeed, blk)
		c = crc32c(c, b[:16])
		c = crc32c(c, zero4[:])
		c = crc32c(c, b[20:])
		if want := le.Uint32(b[16:]); c != want {
			return nil, corruptf(BadChecksum, in.Ino, blk, "xattr block checksum mismatch (stored 0x%08x, computed 0x%08x)", want, c)
		}
	}
	return fs.parseXattrEntries(in.Ino, blk, b, xattrHdrSize, 0)
}

// xattrName gives the full name of an entry and whether the kernel would
// list and serve it.
func xattrName(x *xattrEntry) (string, bool) {
	p, ok := xattrPrefixes[x.index]
	if !ok {
		return "", false
	}
	if x.index == 2 || x.index == 3 {
		return p, len(x.name) == 0
	}
	return p + string(x.name), true
}

// ListXattrs returns the names of the extended attributes the kernel
// lists for this inode, in the kernel's order: in-inode ones first, then
// those of the external block.
func (fs *FS) ListXattrs(in *Inode) ([]string, error) {
	var names []string
	for _, get := range []func(*Inode) ([]xattrEntry, error){fs.inodeXattrs, fs.blockXattrs} {
		xs, err := get(in)
		if err != nil {
			return nil, err
		}
		for i := range xs {
			if n, ok := xattrName(&xs[i]); ok {
				names = append(names, n)
			}
		}
	}
	return names, nil
}

// splitXattrName maps a full attribute name to its on-disk index and
// suffix.
func splitXattrName(name string) (uint8, string, bool) {
	switch name {
	case "system.posix_acl_access":
		return 2, "", true
	case "system.posix_acl_default":
		return 3, "", true
	}
	for idx, p := range xattrPrefixes {
		if idx != 2 && idx != 3 && strings.HasPrefix(name, p) {
			return idx, name[len(p):], true
		}
	}
	return 0, "", false
}

// GetXattr returns the value of the named attribute as getxattr(2) on the
// kernel's mount would: POSIX ACLs are converted to the Linux xattr form,
// values held in EA inodes are read out. The returned slice is the
// caller's.
func (fs *FS) GetXattr(in *Inode, name string) ([]byte, error) {
	idx, suffix, ok := splitXattrName(name)
	if !ok {
		return nil, ErrXattrNamespace
	}
	x, err := fs.findXattr(in, idx, []byte(suffix))
	if err != nil {
		return nil, err
	}
	val, err := fs.xattrValue(in, x)
	if err != nil {
		return nil, err
	}
	if idx == 2 || idx == 3 {
		return aclToXattr(in.Ino, val)
	}
	return val, nil
}

// findXattr looks in the inode body first and then in the block, as
// ext4_xattr_get does. The block search stops at the first entry that
// sorts at or after the name, as the kernel's sorted search does.
func (fs *FS) findXattr(in *Inode, idx uint8, name []byte) (*xattrEntry, error) {
	ibody, err := fs.inodeXattrs(in)
	if err != nil {
		return nil, err
	}
	for i := range ibody {
		if ibody[i].index == idx && bytes.Equal(ibody[i].name, name) {
			return &ibody[i], nil
		}
	}
	blk, err := fs.blockXattrs(in)
	if err != nil {
		return nil, err
	}
	for i := range blk {
		x := &blk[i]
		cmp := int(idx) - int(x.index)
		if cmp == 0 {
			cmp = len(name) - len(x.name)
		}
		if cmp == 0 {
			cmp = bytes.Compare(name, x.name)
		}
		if cmp == 0 {
			return x, nil
		}
		if cmp < 0 {
			break
		}
	}
	return nil, ErrNoXattr
}

// xattrValue returns a copy of the entry's value, reading it from its EA
// inode when it lives there.
func (fs *FS) xattrValue(in *Inode, x *xattrEntry) ([]byte, error) {
	if x.valueInum == 0 {
		return append([]byte(nil), x.value...), nil
	}
	ea, err := fs.readInode(x.valueInum)
	if err != nil {
		return nil, err
	}
	if ea.Flags&FlagEAInode == 0 || !ea.IsRegular() {
		return nil, corruptf(BadXattr, in.Ino, 0, "EA inode %d lacks the EA_INODE flag", x.valueInum)
	}
	if ea.Size != uint64(x.valueSize) {
		return nil, corruptf(BadXattr, in.Ino, 0, "EA inode %d holds %d bytes, the entry says %d", x.valueInum, ea.Size, x.valueSize)
	}
	val := make([]byte, x.valueSize)
	if _, err := fs.readData(ea, val, 0); err != nil {
		return nil, err
	}
	return val, nil
}

// inlineData returns the inline data of an inode: i_block followed by the
// value of the in-inode system.data attribute.
func (fs *FS) inlineData(in *Inode) ([]byte, error) {
	xs, err := fs.inodeXattrs(in)
	if err != nil {
		return nil, err
	}
	data := append([]byte(nil), in.Block[:]...)
	for i := range xs {
		if xs[i].index == xattrIndexData && string(xs[i].name) == "data" {
			if xs[i].valueInum != 0 {
				return nil, corruptf(BadInlineData, in.Ino, 0, "system.data stored in an EA inode")
			}
			data = append(data, xs[i].value...)
			return data, nil
		}
	}
	return data, nil
}
