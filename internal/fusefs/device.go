package fusefs

import (
	"io"
	"runtime"
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
