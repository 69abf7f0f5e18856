package ext4

import "encoding/binary"

// POSIX ACL tags, shared by the ext4 on-disk form and the Linux xattr form.
const (
	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclGroup    = 0x08
	aclMask     = 0x10
	aclOther    = 0x20

	ext4ACLVersion  = 1
	xattrACLVersion = 2
	aclUndefinedID  = 0xFFFFFFFF
)

// aclToXattr converts an ACL from ext4's compact on-disk form (a version
// header, then 4-byte entries for the *_OBJ, MASK and OTHER tags and 8-byte
// entries with an id for USER and GROUP) to the form getxattr returns
// (version 2, every entry 8 bytes, id -1 where there is none), checking it
// as ext4_acl_from_disk does.
func aclToXattr(ino uint32, disk []byte) ([]byte, error) {
	le := binary.LittleEndian
	if len(disk) < 4 || le.Uint32(disk) != ext4ACLVersion {
		return nil, corruptf(BadACL, ino, 0, "bad ACL header")
	}
	out := make([]byte, 4, 4+len(disk)*2)
	le.PutUint32(out, xattrACLVersion)
	p := disk[4:]
	for len(p) > 0 {
		if len(p) < 4 {
			return nil, corruptf(BadACL, ino, 0, "truncated ACL entry")
		}
		tag, perm := le.Uint16(p), le.Uint16(p[2:])
		id := uint32(aclUndefinedID)
		switch tag {
		case aclUserObj, aclGroupObj, aclMask, aclOther:
			p = p[4:]
		case aclUser, aclGroup:
			if len(p) < 8 {
				return nil, corruptf(BadACL, ino, 0, "truncated ACL entry")
			}
			id = le.Uint32(p[4:])
			p = p[8:]
		default:
			return nil, corruptf(BadACL, ino, 0, "unknown ACL tag 0x%x", tag)
		}
		var e [8]byte
		le.PutUint16(e[0:], tag)
		le.PutUint16(e[2:], perm)
		le.PutUint32(e[4:], id)
		out = append(out, e[:]...)
	}
	if len(out) == 4 {
		// The kernel reads an empty ACL as no ACL at all.
		return nil, ErrNoXattr
	}
	return out, nil
}
