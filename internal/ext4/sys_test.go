package ext4_test

import (
	"syscall"
	"time"
	"unsafe"
)

func setxattr(path, name string, value []byte) error {
	return syscall.Setxattr(path, name, value, 0)
}

// lutimes sets atime and mtime of path without following a symlink.
func lutimes(path string, t time.Time) error {
	const atSymlinkNofollow = 0x100
	atFdcwd := -100
	ts := [2]syscall.Timespec{syscall.NsecToTimespec(t.UnixNano()), syscall.NsecToTimespec(t.UnixNano())}
	p, err := syscall.BytePtrFromString(path)
	if err != nil {
		return err
	}
	_, _, e := syscall.Syscall6(syscall.SYS_UTIMENSAT, uintptr(atFdcwd), uintptr(unsafe.Pointer(p)),
		uintptr(unsafe.Pointer(&ts[0])), atSymlinkNofollow, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}
