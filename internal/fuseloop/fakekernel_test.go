package fuseloop_test

import (
	"safefs/internal/iomap/abi"

	"bytes"
	"encoding/binary"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"safefs/internal/fuseloop"
)

// The fake kernel: one end of a SOCK_SEQPACKET socketpair stands in for
// /dev/fuse. Like /dev/fuse, a seqpacket socket keeps message boundaries
// (one read, one request; one write, one reply), and once the test closes
// its end the loop's reads return 0, which the loop takes as the end of
// the connection, as it takes ENODEV from /dev/fuse.

// The iomap numbers come from internal/iomap/abi, the one place they are
// kept.
const (
	fuseIomap    = abi.InitIomap
	opIomapConf  = abi.OpIomapConfig
	opIomapBegin = abi.OpIomapBegin
	opIomapEnd   = abi.OpIomapEnd
)

// Opcodes of the tests.
const (
	opLookup      = 1
	opForget      = 2
	opGetattr     = 3
	opOpen        = 14
	opRead        = 15
	opInit        = 26
	opOpendir     = 27
	opReaddir     = 28
	opInterrupt   = 36
	opDestroy     = 38
	opBatchForget = 42
)

const (
	inHeaderSize  = 40 // fuse_in_header
	outHeaderSize = 16 // fuse_out_header
	pageSize      = 4096
)

// copyStruct fills *dst (a FUSE struct) from the start of b.
func copyStruct[T any](dst *T, b []byte) {
	copy(unsafe.Slice((*byte)(unsafe.Pointer(dst)), unsafe.Sizeof(*dst)), b)
}

// alignedBuffer returns a page-aligned buffer, as O_DIRECT wants.
func alignedBuffer(size int) []byte {
	b := make([]byte, size+pageSize)
	off := int(uintptr(unsafe.Pointer(&b[0])) & (pageSize - 1))
	if off != 0 {
		off = pageSize - off
	}
	return b[off : off+size]
}

type fakeKernel struct {
	t      testing.TB
	fd     int
	unique atomic.Uint64
	once   sync.Once
	buf    []byte // for replies; one goroutine receives
}

// newFakeKernel returns the kernel's end and the descriptor for the loop.
// Replies carry up to maxWrite bytes of data, so the loop's send buffer
// must hold one.
func newFakeKernel(t testing.TB, maxWrite int) (*fakeKernel, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	for _, fd := range fds {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
		if got, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF); got < maxWrite+2*pageSize {
			unix.Close(fds[0])
			unix.Close(fds[1])
			t.Skipf("a seqpacket socket here sends at most %d bytes; the test needs %d", got, maxWrite+2*pageSize)
		}
	}
	k := &fakeKernel{t: t, fd: fds[1]}
	t.Cleanup(k.close)
	return k, fds[0]
}

// close ends the connection: the loop's next read returns 0.
func (k *fakeKernel) close() {
	k.once.Do(func() { unix.Close(k.fd) })
}

// structBody returns the bytes of a FUSE request struct after its header.
func structBody[T any](v *T) []byte {
	b := unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v))
	return append([]byte(nil), b[inHeaderSize:]...)
}

// raw sends b as it is.
func (k *fakeKernel) raw(b []byte) {
	k.t.Helper()
	if _, err := unix.Write(k.fd, b); err != nil {
		k.t.Fatalf("fake kernel: send: %v", err)
	}
}

// send sends a request and returns its unique ID.
func (k *fakeKernel) send(op uint32, node uint64, body []byte) uint64 {
	k.t.Helper()
	u := k.unique.Add(2) // the kernel's IDs are even; odd ones are interrupts
	k.raw(request(op, u, node, body))
	return u
}

// request builds a request with a correct header.
func request(op uint32, unique, node uint64, body []byte) []byte {
	b := make([]byte, inHeaderSize+len(body))
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint32(b[4:], op)
	ne.PutUint64(b[8:], unique)
	ne.PutUint64(b[16:], node)
	ne.PutUint32(b[24:], 1000) // uid
	ne.PutUint32(b[28:], 1000) // gid
	ne.PutUint32(b[32:], 4242) // pid
	copy(b[inHeaderSize:], body)
	return b
}

// reply is what the loop wrote.
type reply struct {
	Unique uint64
	Status int32 // minus an errno, or a notification code
	Data   []byte
}

// recv returns the next message from the loop, failing the test if none
// comes within d.
func (k *fakeKernel) recv(d time.Duration) reply {
	k.t.Helper()
	r, ok := k.tryRecv(d)
	if !ok {
		k.t.Fatalf("fake kernel: no reply within %v", d)
	}
	return r
}

// tryRecv is recv that reports a timeout instead of failing.
func (k *fakeKernel) tryRecv(d time.Duration) (reply, bool) {
	k.t.Helper()
	pfd := []unix.PollFd{{Fd: int32(k.fd), Events: unix.POLLIN}}
	deadline := time.Now().Add(d)
	for {
		n, err := unix.Poll(pfd, int(max(time.Until(deadline), 0)/time.Millisecond))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			k.t.Fatalf("fake kernel: poll: %v", err)
		}
		if n == 0 {
			return reply{}, false
		}
		break
	}
	if k.buf == nil {
		k.buf = make([]byte, 4<<20)
	}
	buf := k.buf
	n, err := unix.Read(k.fd, buf)
	if err != nil {
		k.t.Fatalf("fake kernel: read: %v", err)
	}
	if n < outHeaderSize {
		k.t.Fatalf("fake kernel: reply of %d bytes", n)
	}
	ne := binary.NativeEndian
	if l := ne.Uint32(buf[0:]); int(l) != n {
		k.t.Fatalf("fake kernel: reply header says %d bytes, got %d", l, n)
	}
	return reply{
		Status: int32(ne.Uint32(buf[4:])),
		Unique: ne.Uint64(buf[8:]),
		Data:   bytes.Clone(buf[outHeaderSize:n]),
	}, true
}

// expectNone fails if the loop sends anything within d.
func (k *fakeKernel) expectNone(d time.Duration, why string) {
	k.t.Helper()
	if r, ok := k.tryRecv(d); ok {
		k.t.Errorf("%s: got a message: unique %d status %d, %d bytes", why, r.Unique, r.Status, len(r.Data))
	}
}

// call sends a request and returns its reply, which must be the next
// message.
func (k *fakeKernel) call(op uint32, node uint64, body []byte) reply {
	k.t.Helper()
	u := k.send(op, node, body)
	r := k.recv(5 * time.Second)
	if r.Unique != u {
		k.t.Fatalf("opcode %d: reply to %d, want %d", op, r.Unique, u)
	}
	return r
}

// ok is call that expects success.
func (k *fakeKernel) ok(op uint32, node uint64, body []byte) []byte {
	k.t.Helper()
	r := k.call(op, node, body)
	if r.Status != 0 {
		k.t.Fatalf("opcode %d: %v", op, syscall.Errno(-r.Status))
	}
	return r.Data
}

// initIn is the INIT a recent kernel sends, with FUSE_IOMAP offered if
// iomap.
func initIn(iomap bool) []byte {
	in := fuse.InitIn{
		Major:        7,
		Minor:        99,
		MaxReadAhead: 1 << 20,
		Flags: fuse.CAP_ASYNC_READ | fuse.CAP_BIG_WRITES | fuse.CAP_READDIRPLUS |
			fuse.CAP_READDIRPLUS_AUTO | fuse.CAP_MAX_PAGES | fuse.CAP_POSIX_ACL |
			fuse.CAP_CACHE_SYMLINKS | fuse.CAP_PARALLEL_DIROPS | fuse.CAP_INIT_EXT,
	}
	if iomap {
		in.Flags2 = uint32(fuseIomap >> 32)
	}
	return structBody(&in)
}

// decode reads a reply struct.
func decode[T any](t testing.TB, b []byte) *T {
	t.Helper()
	v := new(T)
	if len(b) < int(unsafe.Sizeof(*v)) {
		t.Fatalf("reply of %d bytes, want %d for %T", len(b), unsafe.Sizeof(*v), *v)
	}
	copyStruct(v, b)
	return v
}

// logSink collects log lines.
type logSink struct {
	mu    sync.Mutex
	lines []string
}

func (s *logSink) logf(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lines = append(s.lines, fmt.Sprintf(format, args...))
}

func (s *logSink) Write(p []byte) (int, error) {
	s.logf("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (s *logSink) Lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lines...)
}

// contains reports whether a line contains sub.
func (s *logSink) contains(sub string) bool {
	for _, l := range s.Lines() {
		if strings.Contains(l, sub) {
			return true
		}
	}
	return false
}

// waitFor waits until a line contains sub.
func (s *logSink) waitFor(sub string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for !s.contains(sub) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// served runs Serve in a goroutine.
type served struct {
	done chan struct{}
	err  error
}

func serve(l *fuseloop.Loop) *served {
	s := &served{done: make(chan struct{})}
	go func() {
		s.err = l.Serve()
		close(s.done)
	}()
	return s
}

// wait waits for Serve to return.
func (s *served) wait(t testing.TB, d time.Duration) error {
	t.Helper()
	select {
	case <-s.done:
		return s.err
	case <-time.After(d):
		buf := make([]byte, 1<<20)
		t.Fatalf("Serve has not returned after %v; goroutines:\n%s", d, buf[:runtime.Stack(buf, true)])
		return nil
	}
}

// goroutinesSettle waits for the goroutine count to come back to at most
// want, and fails with the stacks if it does not.
func goroutinesSettle(t testing.TB, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > want {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, want at most %d:\n%s", runtime.NumGoroutine(), want, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}
