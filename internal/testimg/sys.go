//go:build linux

package testimg

import (
	"encoding/binary"
	"errors"
	"runtime"
	"syscall"
	"unsafe"
)

// The stdlib syscall package is frozen and lacks the l*xattr family,
// utimensat with flags and statx, which the walker needs so that it never
// follows symlinks and can see birth times. They are thin raw-syscall
// wrappers here because the module takes no dependencies (no x/sys/unix).

// atFDCWD is a variable because a negative constant cannot be converted to
// uintptr for the raw syscalls.
var atFDCWD = -100

const (
	atSymlinkNofollow = 0x100
	seekData          = 3
	seekHole          = 4
	oNoatime          = 0o1000000
)

func bytePtr(s string) (*byte, error) { return syscall.BytePtrFromString(s) }

func bufPtr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

func lsetxattr(path, name string, value []byte, flags int) error {
	p, err := bytePtr(path)
	if err != nil {
		return err
	}
	n, err := bytePtr(name)
	if err != nil {
		return err
	}
	// A zero-length value must still pass a valid pointer on some kernels'
	// copy paths; an empty non-nil slice has no element to point at, so use
	// a one-byte scratch buffer with size 0.
	var scratch [1]byte
	v := unsafe.Pointer(&scratch[0])
	if len(value) > 0 {
		v = unsafe.Pointer(&value[0])
	}
	_, _, e := syscall.Syscall6(syscall.SYS_LSETXATTR, uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(n)),
		uintptr(v), uintptr(len(value)), uintptr(flags), 0)
	runtime.KeepAlive(value)
	if e != 0 {
		return e
	}
	return nil
}

func lgetxattrRaw(path, name string, dest []byte) (int, error) {
	p, err := bytePtr(path)
	if err != nil {
		return 0, err
	}
	n, err := bytePtr(name)
	if err != nil {
		return 0, err
	}
	r, _, e := syscall.Syscall6(syscall.SYS_LGETXATTR, uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(n)),
		uintptr(bufPtr(dest)), uintptr(len(dest)), 0, 0)
	runtime.KeepAlive(dest)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func llistxattrRaw(path string, dest []byte) (int, error) {
	p, err := bytePtr(path)
	if err != nil {
		return 0, err
	}
	r, _, e := syscall.Syscall(syscall.SYS_LLISTXATTR, uintptr(unsafe.Pointer(p)), uintptr(bufPtr(dest)), uintptr(len(dest)))
	runtime.KeepAlive(dest)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// lgetxattr returns the value of one xattr, growing the buffer while the
// value changes size between the probe and the read (ERANGE).
func lgetxattr(path, name string) ([]byte, error) {
	for {
		n, err := lgetxattrRaw(path, name, nil)
		if err != nil {
			return nil, err
		}
		buf := make([]byte, n)
		m, err := lgetxattrRaw(path, name, buf)
		if errors.Is(err, syscall.ERANGE) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:m], nil
	}
}

// llistxattr returns the xattr names of path (not following a symlink).
func llistxattr(path string) ([]string, error) {
	for {
		n, err := llistxattrRaw(path, nil)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, nil
		}
		buf := make([]byte, n)
		m, err := llistxattrRaw(path, buf)
		if errors.Is(err, syscall.ERANGE) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var names []string
		start := 0
		for i := 0; i < m; i++ {
			if buf[i] == 0 {
				if i > start {
					names = append(names, string(buf[start:i]))
				}
				start = i + 1
			}
		}
		return names, nil
	}
}

// lutimesNano sets atime and mtime without following a final symlink, so
// that symlinks in the generated tree get deterministic times too.
func lutimesNano(path string, atime, mtime Time) error {
	p, err := bytePtr(path)
	if err != nil {
		return err
	}
	ts := [2]syscall.Timespec{
		{Sec: atime.Sec, Nsec: atime.Nsec},
		{Sec: mtime.Sec, Nsec: mtime.Nsec},
	}
	_, _, e := syscall.Syscall6(syscall.SYS_UTIMENSAT, uintptr(atFDCWD), uintptr(unsafe.Pointer(p)),
		uintptr(unsafe.Pointer(&ts[0])), atSymlinkNofollow, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// statxSysnum returns the statx syscall number, which the frozen syscall
// package does not define; 0 means unknown, and the caller falls back to
// lstat without birth times.
func statxSysnum() uintptr {
	switch runtime.GOARCH {
	case "amd64":
		return 332
	case "386", "ppc64", "ppc64le":
		return 383
	case "arm":
		return 397
	case "arm64", "riscv64", "loong64":
		return 291
	case "s390x":
		return 379
	case "mips64", "mips64le":
		return 5326
	case "mips", "mipsle":
		return 4366
	}
	return 0
}

const (
	statxBasicStats = 0x7ff
	statxBtime      = 0x800
)

// statxResult is the part of struct statx the walker uses. The kernel
// struct is 256 bytes with the same layout on every architecture, so it is
// decoded from a byte buffer by offset rather than declared as a Go struct.
type statxResult struct {
	mask                 uint32
	nlink, uid, gid      uint32
	mode                 uint16
	ino, size, blocks    uint64
	atime, btime         Time
	ctime, mtime         Time
	rdevMajor, rdevMinor uint32
	devMajor, devMinor   uint32
	haveBtime            bool
}

func lstatx(path string) (statxResult, error) {
	var r statxResult
	if nr := statxSysnum(); nr != 0 {
		p, err := bytePtr(path)
		if err != nil {
			return r, err
		}
		var buf [256]byte
		_, _, e := syscall.Syscall6(nr, uintptr(atFDCWD), uintptr(unsafe.Pointer(p)), atSymlinkNofollow,
			statxBasicStats|statxBtime, uintptr(unsafe.Pointer(&buf[0])), 0)
		if e == 0 {
			return decodeStatx(buf[:], binary.NativeEndian), nil
		}
		if e != syscall.ENOSYS {
			return r, e
		}
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		return r, err
	}
	r.nlink = uint32(st.Nlink)
	r.uid, r.gid = st.Uid, st.Gid
	r.mode = uint16(st.Mode)
	r.ino, r.size, r.blocks = st.Ino, uint64(st.Size), uint64(st.Blocks)
	r.atime = Time{int64(st.Atim.Sec), int64(st.Atim.Nsec)}
	r.mtime = Time{int64(st.Mtim.Sec), int64(st.Mtim.Nsec)}
	r.ctime = Time{int64(st.Ctim.Sec), int64(st.Ctim.Nsec)}
	dev := uint64(st.Rdev)
	r.rdevMajor, r.rdevMinor = Major(dev), Minor(dev)
	return r, nil
}

func decodeStatx(b []byte, bo binary.ByteOrder) statxResult {
	ts := func(off int) Time {
		return Time{Sec: int64(bo.Uint64(b[off:])), Nsec: int64(bo.Uint32(b[off+8:]))}
	}
	r := statxResult{
		mask:      bo.Uint32(b[0:]),
		nlink:     bo.Uint32(b[16:]),
		uid:       bo.Uint32(b[20:]),
		gid:       bo.Uint32(b[24:]),
		mode:      bo.Uint16(b[28:]),
		ino:       bo.Uint64(b[32:]),
		size:      bo.Uint64(b[40:]),
		blocks:    bo.Uint64(b[48:]),
		atime:     ts(64),
		btime:     ts(80),
		ctime:     ts(96),
		mtime:     ts(112),
		rdevMajor: bo.Uint32(b[128:]),
		rdevMinor: bo.Uint32(b[132:]),
		devMajor:  bo.Uint32(b[136:]),
		devMinor:  bo.Uint32(b[140:]),
	}
	r.haveBtime = r.mask&statxBtime != 0
	return r
}

// lseek wraps syscall.Seek, which exists on every Linux port.
func lseek(fd int, off int64, whence int) (int64, error) {
	return syscall.Seek(fd, off, whence)
}
