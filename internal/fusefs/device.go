package fusefs

import (
	"errors"
	"io"
	"runtime"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// LimitDevice returns a ReaderAt that lets at most n reads of dev run at
// once; n <= 0 picks DefaultDeviceReads. Give it, not the raw device, to
// ext4.Open, so that every device read (file data, directory blocks,
// inodes) is bounded.
//
// Why: go-fuse runs each request in its own goroutine, and a goroutine
// blocked in pread(2) holds an OS thread. Without a bound, a burst of
// requests on a slow device (a USB stick, a failing disk) makes one thread
// per request, without limit. Requests waiting for a slot block on a
// channel, which holds no thread.
func LimitDevice(dev io.ReaderAt, n int) io.ReaderAt {
	if n <= 0 {
		n = DefaultDeviceReads()
	}
	return &limitedDevice{dev: dev, slots: make(chan struct{}, n)}
}

// DefaultDeviceReads is the default bound on parallel device reads: twice
// GOMAXPROCS, at least 4 and at most 32. Reads that hit the host's page
// cache (an image file) are memory copies, so about one per CPU keeps the
// CPUs busy and the second one per CPU covers reads that wait for the
// device; a few are always allowed so that a single-CPU machine still
// overlaps device latency, and above 32 an SSD's queue is full anyway and
// more threads only cost memory.
func DefaultDeviceReads() int {
	return min(max(2*runtime.GOMAXPROCS(0), 4), 32)
}

type limitedDevice struct {
	dev   io.ReaderAt
	slots chan struct{}
}

func (d *limitedDevice) ReadAt(p []byte, off int64) (int, error) {
	d.slots <- struct{}{}
	defer func() { <-d.slots }()
	return d.dev.ReadAt(p, off)
}

// BulkRead is the smallest read that BulkDevice sends to its direct
// descriptor. File data arrives in READs of up to MaxRequest; metadata
// (inode tables, directories, extent blocks) in single filesystem blocks.
// Small reads stay in the page cache of the device, where its read-ahead
// also fetches the neighbouring small files and inode-table blocks that a
// walk reads next.
const BulkRead = 64 << 10

// DirectAlign is the alignment BulkDevice requires of a read's buffer,
// offset and length before it sends the read to the direct descriptor:
// the page size, which covers every logical block size a device mounted
// here can have. A read that is not aligned goes to the buffered one.
const DirectAlign = 4096

// BulkDevice returns a ReaderAt over one device opened twice: buffered,
// and direct (O_DIRECT). Reads of at least BulkRead bytes that are
// aligned go to direct, the rest to buffered.
//
// Why: file data read through the daemon lands in the FUSE file's page
// cache. Read through the device's page cache as well, it would be cached
// twice (a 512 MiB file read once took 1 GiB of memory), copied once more,
// and O_DIRECT reads of the mount would be served from the device's cache.
// Direct reads go from the device into the reply buffer (page-aligned by
// internal/fuseloop), and several READs in flight keep the device busy.
//
// If the direct descriptor refuses a read with EINVAL (a device with a
// larger logical block, or one that does not do direct I/O), that read
// and all later ones go to buffered.
func BulkDevice(buffered, direct io.ReaderAt) io.ReaderAt {
	if direct == nil {
		return buffered
	}
	return &bulkDevice{buffered: buffered, direct: direct}
}

type bulkDevice struct {
	buffered, direct io.ReaderAt
	// refused is set once the direct descriptor has answered EINVAL.
	refused atomic.Bool
}

func (d *bulkDevice) ReadAt(p []byte, off int64) (int, error) {
	if len(p) < BulkRead || !aligned(p, off) || d.refused.Load() {
		return d.buffered.ReadAt(p, off)
	}
	n, err := d.direct.ReadAt(p, off)
	if errors.Is(err, syscall.EINVAL) {
		d.refused.Store(true)
		return d.buffered.ReadAt(p, off)
	}
	return n, err
}

// aligned reports whether a read of p at off can be a direct one.
func aligned(p []byte, off int64) bool {
	return off%DirectAlign == 0 && len(p)%DirectAlign == 0 &&
		uintptr(unsafe.Pointer(unsafe.SliceData(p)))%DirectAlign == 0
}
