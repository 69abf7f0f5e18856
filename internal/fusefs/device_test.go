package fusefs_test

import (
	"bytes"
	"io"
	"sync"
	"syscall"
	"testing"
	"unsafe"

	"safefs/internal/fusefs"
)

// recordingDevice serves bytes from data and records the reads it gets.
type recordingDevice struct {
	data  []byte
	err   error // returned instead of data when set
	mu    sync.Mutex
	reads int
}

func (d *recordingDevice) ReadAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	d.reads++
	d.mu.Unlock()
	if d.err != nil {
		return 0, d.err
	}
	if off >= int64(len(d.data)) {
		return 0, io.EOF
	}
	n := copy(p, d.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// alignedBuffer returns n bytes starting on a DirectAlign boundary.
func alignedBuffer(n int) []byte {
	b := make([]byte, n+fusefs.DirectAlign)
	off := int(uintptr(unsafe.Pointer(&b[0])) % fusefs.DirectAlign)
	if off != 0 {
		off = fusefs.DirectAlign - off
	}
	return b[off : off+n]
}

// TestBulkDevice checks which reads BulkDevice sends to its direct
// descriptor: large aligned ones only, with the same bytes as the
// buffered one; and that an EINVAL from the direct one sends that read
// and every later one to the buffered one.
func TestBulkDevice(t *testing.T) {
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(i * 7 / 3)
	}
	big := alignedBuffer(fusefs.BulkRead)
	for _, c := range []struct {
		name   string
		p      []byte
		off    int64
		direct bool
	}{
		{"large aligned", big, 1 << 20, true},
		{"small", big[:fusefs.BulkRead/2], 1 << 20, false},
		{"unaligned offset", big, 1<<20 + 1024, false},
		{"unaligned length", alignedBuffer(fusefs.BulkRead + 512), 1 << 20, false},
		{"unaligned buffer", alignedBuffer(fusefs.BulkRead + fusefs.DirectAlign)[512 : 512+fusefs.BulkRead], 1 << 20, false},
	} {
		buffered, direct := &recordingDevice{data: data}, &recordingDevice{data: data}
		dev := fusefs.BulkDevice(buffered, direct)
		clear(c.p)
		if n, err := dev.ReadAt(c.p, c.off); n != len(c.p) || err != nil {
			t.Errorf("%s: read %d bytes, %v", c.name, n, err)
		}
		if !bytes.Equal(c.p, data[c.off:c.off+int64(len(c.p))]) {
			t.Errorf("%s: wrong bytes", c.name)
		}
		if got := direct.reads == 1 && buffered.reads == 0; got != c.direct {
			t.Errorf("%s: %d direct and %d buffered reads, want direct: %v", c.name, direct.reads, buffered.reads, c.direct)
		}
	}

	buffered, direct := &recordingDevice{data: data}, &recordingDevice{err: syscall.EINVAL}
	dev := fusefs.BulkDevice(buffered, direct)
	for i := 0; i < 3; i++ {
		if n, err := dev.ReadAt(big, 0); n != len(big) || err != nil || !bytes.Equal(big, data[:len(big)]) {
			t.Fatalf("read %d after EINVAL: %d bytes, %v", i, n, err)
		}
	}
	if direct.reads != 1 || buffered.reads != 3 {
		t.Errorf("after EINVAL: %d direct and %d buffered reads, want 1 and 3", direct.reads, buffered.reads)
	}
	if d := fusefs.BulkDevice(buffered, nil); d != io.ReaderAt(buffered) {
		t.Errorf("BulkDevice without a direct descriptor should be the buffered one")
	}
}
