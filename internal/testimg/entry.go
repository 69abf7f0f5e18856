//go:build linux

package testimg

import (
	"fmt"
	"strconv"
)

// Entry is one file as an oracle or a reader sees it. It is deliberately
// neutral (plain integers and strings, no ext4 structures) so that any reader
// can fill it in and be compared with the kernel's view by Compare.
type Entry struct {
	// Path is relative to the root, "/"-separated; the root itself is ".".
	Path string
	// Ino is the inode number.
	Ino uint64
	// Mode is the full st_mode: file type bits (syscall.S_IFREG, ...) OR'd
	// with the permission bits including setuid, setgid and sticky.
	Mode uint32
	// Uid and Gid are the full 32-bit owner and group.
	Uid, Gid uint32
	// Size is st_size.
	Size int64
	// Nlink is the link count.
	Nlink uint64
	// Rdev is the device number of a character or block device, encoded as
	// glibc's makedev (see Mkdev); zero for other file types.
	Rdev uint64
	// Atime, Mtime and Ctime are the inode's access, modification and change
	// times.
	Atime, Mtime, Ctime Time
	// Btime is the creation time (ext4 i_crtime); the zero Time if unknown.
	// Compare skips the field when either side is zero.
	Btime Time
	// Target is the target of a symbolic link.
	Target string
	// Xattrs holds every extended attribute name visible to root with its
	// value as returned by getxattr (so POSIX ACLs appear in the Linux xattr
	// form, version 2, not in ext4's on-disk form). Nil if there are none.
	Xattrs map[string][]byte
	// SHA256 is the hex SHA-256 of the content of a regular file; empty for
	// other file types.
	SHA256 string
	// Segments are the data segments [start, end) of a regular file as
	// reported by lseek SEEK_DATA/SEEK_HOLE. Nil means not collected (Compare
	// then skips the field); a collected file without data has an empty,
	// non-nil slice.
	Segments [][2]int64
}

// Time is a timestamp as seconds and nanoseconds since the Unix epoch.
// Seconds are signed and 64-bit because ext4 can store times before 1970 and
// after 2038.
type Time struct {
	Sec  int64
	Nsec int64
}

// IsZero reports whether t is the zero Time, which stands for "unknown".
func (t Time) IsZero() bool { return t.Sec == 0 && t.Nsec == 0 }

// String formats t as seconds.nanoseconds, which is unambiguous for
// negative times too (the sign applies to the seconds only).
func (t Time) String() string { return fmt.Sprintf("%d.%09d", t.Sec, t.Nsec) }

// Mkdev encodes a device number the way glibc's makedev (and
// golang.org/x/sys/unix.Mkdev) does. It equals (major<<8)|minor for major and
// minor below 256, and is what stat(2) returns in st_rdev on Linux.
func Mkdev(major, minor uint32) uint64 {
	return uint64(major&0x00000fff)<<8 |
		uint64(major&0xfffff000)<<32 |
		uint64(minor&0x000000ff) |
		uint64(minor&0xffffff00)<<12
}

// Major extracts the major number from a device number encoded by Mkdev.
func Major(dev uint64) uint32 {
	return uint32((dev>>8)&0x00000fff) | uint32((dev>>32)&0xfffff000)
}

// Minor extracts the minor number from a device number encoded by Mkdev.
func Minor(dev uint64) uint32 {
	return uint32(dev&0x000000ff) | uint32((dev>>12)&0xffffff00)
}

// modeString formats a mode as octal for error messages, where decimal modes
// would be unreadable.
func modeString(m uint32) string { return "0" + strconv.FormatUint(uint64(m), 8) }
