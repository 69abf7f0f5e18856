package fuseloop

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// hugePage is the size of a transparent huge page on x86-64.
const hugePage = 2 << 20

// maxHugeBuffers bounds the reader buffers kept in huge pages: enough for
// the READs of one sequential stream in flight at once (mount.safe sets
// the read-ahead to four of the largest), so that the memory this costs
// stays small whatever MaxReaders is.
const maxHugeBuffers = 4

// newReader returns a reader with a buffer of l.bufSize bytes, in a
// transparent huge page of its own while fewer than maxHugeBuffers live
// readers have one, else from the Go heap.
//
// Why huge pages: READ data goes from the device straight into this
// buffer (an O_DIRECT read, see fusefs.BulkDevice), and the block layer
// splits a read whose memory needs more segments than the queue takes
// (128 on a loop device, a segment being one physically contiguous run
// of at most 64 KiB). The Go heap's 4 KiB pages are scattered, which cut
// every 1 MiB READ into two 512 KiB device requests; a huge page is
// contiguous, so the device gets one. Cold sequential reads through a
// loop device went about 25% faster.
func (l *Loop) newReader() *reader {
	if l.huge.Add(1) <= maxHugeBuffers {
		if m := hugeMapping(l.bufSize); m != nil {
			r := &reader{buf: m[:l.bufSize:l.bufSize]}
			// A reader dropped from the spare pool gives its page
			// back, and its place to a later reader.
			runtime.AddCleanup(r, func(m []byte) {
				unix.MunmapPtr(unsafe.Pointer(&m[0]), uintptr(len(m)))
				l.huge.Add(-1)
			}, m)
			return r
		}
	}
	l.huge.Add(-1)
	return &reader{buf: newBuffer(l.bufSize)}
}

// hugeMapping maps hugePage bytes aligned to hugePage and asks for a
// transparent huge page there (which the kernel may not give: THP
// disabled or memory fragmented, and the buffer then works as any
// other). It returns nil when size does not fit or mmap fails.
func hugeMapping(size int) []byte {
	if size > hugePage {
		return nil
	}
	// Map twice the size, then unmap what lies outside the aligned
	// middle.
	p, err := unix.MmapPtr(-1, 0, nil, 2*hugePage, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil
	}
	head := (hugePage - uintptr(p)%hugePage) % hugePage
	if head > 0 {
		unix.MunmapPtr(p, head)
	}
	q := unsafe.Add(p, head)
	if tail := hugePage - head; tail > 0 {
		unix.MunmapPtr(unsafe.Add(q, hugePage), tail)
	}
	m := unsafe.Slice((*byte)(q), hugePage)
	unix.Madvise(m, unix.MADV_HUGEPAGE)
	return m
}

// newBuffer returns a page-aligned buffer of size bytes from the Go heap.
func newBuffer(size int) []byte {
	b := make([]byte, size+pageSize)
	off := int(uintptr(unsafe.Pointer(&b[0])) & (pageSize - 1))
	if off != 0 {
		off = pageSize - off
	}
	return b[off : off+size : off+size]
}
