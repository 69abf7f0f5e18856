package fuseloop

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"
)

// TestHugeBuffers checks newReader's bookkeeping: the first
// maxHugeBuffers readers get a buffer at the start of a 2 MiB-aligned
// mapping that the kernel may back with a huge page, the rest heap
// buffers, and a reader the garbage collector frees gives its mapping
// and its place back.
func TestHugeBuffers(t *testing.T) {
	l := &Loop{bufSize: 1<<20 + 2*pageSize}
	var rs []*reader
	for range maxHugeBuffers + 2 {
		r := l.newReader()
		if len(r.buf) != l.bufSize {
			t.Fatalf("buffer of %d bytes, want %d", len(r.buf), l.bufSize)
		}
		r.buf[0], r.buf[len(r.buf)-1] = 1, 1 // writable throughout
		rs = append(rs, r)
	}
	for i, r := range rs {
		addr := uintptr(unsafe.Pointer(&r.buf[0]))
		if addr%pageSize != 0 {
			t.Errorf("reader %d: buffer at %#x is not page-aligned", i, addr)
		}
		if i < maxHugeBuffers {
			if addr%hugePage != 0 {
				t.Errorf("reader %d: buffer at %#x is not in a huge page of its own", i, addr)
			}
			if thpOn() && !thpEligible(t, addr) {
				t.Errorf("reader %d: the mapping at %#x cannot hold a transparent huge page (no MADV_HUGEPAGE?)", i, addr)
			}
		}
	}
	if n := l.huge.Load(); n != maxHugeBuffers {
		t.Errorf("%d huge buffers counted, want %d", n, maxHugeBuffers)
	}

	// Dropped readers unmap their pages (the cleanup runs after a GC).
	rs = nil
	for deadline := time.Now().Add(5 * time.Second); l.huge.Load() > 0 && time.Now().Before(deadline); {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if n := l.huge.Load(); n != 0 {
		t.Fatalf("%d huge buffers still counted after their readers were collected", n)
	}
	if r := l.newReader(); uintptr(unsafe.Pointer(&r.buf[0]))%hugePage != 0 {
		t.Errorf("a reader after the cleanups got no huge buffer")
	}
}

// thpOn reports whether transparent huge pages may be used at all.
func thpOn() bool {
	b, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	return err == nil && !strings.Contains(string(b), "[never]")
}

// thpEligible reports what /proc/self/smaps says of the mapping that
// holds addr (the kernel may have merged it with a neighbour).
func thpEligible(t *testing.T, addr uintptr) bool {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skipf("no smaps: %v", err)
	}
	defer f.Close()
	found := false
	for s := bufio.NewScanner(f); s.Scan(); {
		line := s.Text()
		var start, end uintptr
		if n, _ := fmt.Sscanf(line, "%x-%x ", &start, &end); n == 2 {
			found = start <= addr && addr < end
		} else if v, ok := strings.CutPrefix(line, "THPeligible:"); ok && found {
			return strings.TrimSpace(v) == "1"
		}
	}
	t.Fatalf("no mapping holds %#x in /proc/self/smaps", addr)
	return false
}
