package fuseloop

import (
	"encoding/binary"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// FUSE opcodes the loop itself looks at (include/uapi/linux/fuse.h).
const (
	opForget      = 2
	opRead        = 15
	opGetxattr    = 22
	opListxattr   = 23
	opInit        = 26
	opReaddir     = 28
	opInterrupt   = 36
	opIoctl       = 39
	opNotifyReply = 41
	opBatchForget = 42
	opReaddirplus = 44
)

const (
	inHeaderSize  = int(unsafe.Sizeof(fuse.InHeader{}))  // 40
	outHeaderSize = int(unsafe.Sizeof(fuse.OutHeader{})) // 16
	// maxOutData bounds the fixed part of any reply go-fuse builds (its
	// outputDataSize, request_linux.go).
	maxOutData = 288
	// interruptInSize is a whole FUSE_INTERRUPT request.
	interruptInSize = int(unsafe.Sizeof(fuse.InterruptIn{}))
	// initOutMinSize is the INIT reply of a protocol before 7.23.
	initOutMinSize = 24

	pageSize = 4096
	// minReadBuffer is the kernel's FUSE_MIN_READ_BUFFER: reads with a
	// smaller buffer fail with EINVAL.
	minReadBuffer = 8192
	// defaultMaxWrite is go-fuse's default MountOptions.MaxWrite.
	defaultMaxWrite = 128 << 10
	// xattrSizeMax is the kernel's XATTR_SIZE_MAX, the largest
	// GETXATTR/LISTXATTR reply it asks for.
	xattrSizeMax = 64 << 10
)

// Where the reply sizes sit in the requests that ask for a reply of a
// given size, counted from the start of the request (header included).
var (
	readSizeOff    = int(unsafe.Offsetof(fuse.ReadIn{}.Size))
	xattrSizeOff   = int(unsafe.Offsetof(fuse.GetXAttrIn{}.Size))
	ioctlOutOff    = int(unsafe.Offsetof(fuse.IoctlIn{}.OutSize))
	interruptUqOff = int(unsafe.Offsetof(fuse.InterruptIn{}.Unique))
)

// decodeInHeader decodes a request header; len(b) >= inHeaderSize.
func decodeInHeader(b []byte) fuse.InHeader {
	ne := binary.NativeEndian
	var h fuse.InHeader
	h.Length = ne.Uint32(b[0:])
	h.Opcode = ne.Uint32(b[4:])
	h.Unique = ne.Uint64(b[8:])
	h.NodeId = ne.Uint64(b[16:])
	h.Uid = ne.Uint32(b[24:])
	h.Gid = ne.Uint32(b[28:])
	h.Pid = ne.Uint32(b[32:])
	h.TotalExtlen = ne.Uint16(b[36:])
	h.Padding = ne.Uint16(b[38:])
	return h
}

// putOutHeader writes a reply header; len(b) >= outHeaderSize. status is
// minus an errno for a reply, a notification code for a notification.
func putOutHeader(b []byte, length int, status int32, unique uint64) {
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(length))
	ne.PutUint32(b[4:], uint32(status))
	ne.PutUint64(b[8:], unique)
}

// outHeaderError returns the errno of a reply.
func outHeaderError(b []byte) fuse.Status {
	return fuse.Status(-int32(binary.NativeEndian.Uint32(b[4:])))
}

// putInterrupt writes a FUSE_INTERRUPT for request target;
// len(b) >= interruptInSize.
func putInterrupt(b []byte, target uint64) {
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(interruptInSize))
	ne.PutUint32(b[4:], opInterrupt)
	ne.PutUint64(b[interruptUqOff:], target)
}

// interruptTarget returns the request a FUSE_INTERRUPT is about.
func interruptTarget(b []byte) (uint64, bool) {
	if len(b) < interruptUqOff+8 {
		return 0, false
	}
	return binary.NativeEndian.Uint64(b[interruptUqOff:]), true
}

// expectsReply reports whether the kernel waits for a reply to a request.
// FUSE_INTERRUPT is answered only to ask for it again (EAGAIN) or to say
// it is not supported (ENOSYS), which the loop never needs to say.
func expectsReply(op uint32) bool {
	switch op {
	case opForget, opBatchForget, opNotifyReply, opInterrupt:
		return false
	}
	return true
}

// replyRoom is an upper bound of the reply go-fuse may build for a
// request: the header, the largest fixed reply, and the variable part the
// request asks for (the same fields go-fuse's parseRequest reads). A
// request too short for its field is refused by go-fuse without a reply
// body.
func replyRoom(op uint32, req []byte) int {
	field := func(off int) int {
		if len(req) < off+4 {
			return 0
		}
		return int(binary.NativeEndian.Uint32(req[off:]))
	}
	payload := 0
	switch op {
	case opRead, opReaddir, opReaddirplus:
		payload = field(readSizeOff)
	case opGetxattr, opListxattr:
		payload = field(xattrSizeOff)
	case opIoctl:
		payload = field(ioctlOutOff)
	}
	return outHeaderSize + maxOutData + payload
}

// outRegion is the part of a reader's buffer after a request of n bytes
// where its reply is built. It starts so that the reply's payload, after
// the 16-byte header, is page-aligned: READ data then lands on a page
// boundary (a device opened with O_DIRECT needs that), and for the
// requests that ask for large replies, which are short, it leaves the
// whole MaxWrite plus a page.
func outRegion(buf []byte, n int) []byte {
	off := alignUp(n+outHeaderSize, pageSize) - outHeaderSize
	if off > len(buf) {
		return nil
	}
	return buf[off:]
}

func alignUp(n, a int) int { return (n + a - 1) / a * a }

// copyStruct fills *dst (a FUSE struct without pointers) from the start
// of b; bytes b does not have stay zero. The kernel sends a shorter
// fuse_init_in before protocol 7.36, and go-fuse a 24-byte fuse_init_out
// to a kernel before 7.23.
func copyStruct[T any](dst *T, b []byte) {
	copy(unsafe.Slice((*byte)(unsafe.Pointer(dst)), unsafe.Sizeof(*dst)), b)
}

// copyStructBack writes *src back over the start of b, no further than
// len(b).
func copyStructBack[T any](b []byte, src *T) {
	copy(b, unsafe.Slice((*byte)(unsafe.Pointer(src)), unsafe.Sizeof(*src)))
}
