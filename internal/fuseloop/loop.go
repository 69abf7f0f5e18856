// Package fuseloop serves a /dev/fuse descriptor: it reads requests,
// answers the opcodes registered as extensions itself, and hands the rest
// to go-fuse's ProtocolServer, which calls a fuse.RawFileSystem and
// serializes the reply into the loop's buffer. It owns the threads that
// read /dev/fuse.
//
// Why not go-fuse's own fuse.Server: it cannot route an opcode it does not
// know (the FUSE iomap opcodes 4089..4095, see internal/iomap/abi),
// and it cannot answer a request that arrives while its write of the INIT
// reply has not returned, which is when the kernel sends FUSE_IOMAP_CONFIG.
//
// # Threading
//
// Each reader is a goroutine that reads one request into its own buffer,
// handles it inline (go-fuse or an extension), writes the reply and reads
// again: a request is never handed between goroutines, and no buffer is
// allocated per request (the reply is built in the same buffer, after the
// request). Whenever a reader takes a request and no other reader is left
// waiting in read(2), it starts another one, up to Options.MaxReaders, so
// that a request that blocks (a slow device read, or the INIT reply,
// whose write(2) returns only after the kernel has had its
// FUSE_IOMAP_CONFIG answered) never stops the loop from reading the next.
// A reader that finishes a request while GOMAXPROCS others (at least 2)
// are already waiting exits instead: another sleeper in read(2) would
// only be woken for the next request in place of a reader about to ask
// for it, and would hold an OS thread meanwhile (go-fuse's Server bounds
// its waiting readers in the same way). Without this limit, 8 pipelined
// GETATTRs cost about 40% more (BenchmarkWire). Exited readers' buffers
// are reused.
//
// # What ProtocolServer lacks, and how the loop makes up for it
//
//   - Notifications: a ProtocolServer has no descriptor to write to, so
//     go-fuse's notify methods (InodeNotify, EntryNotify, ...) would return
//     ENOSYS; and RawFileSystem.Init, which hands the filesystem the
//     *fuse.Server those methods live on, is never called. Filesystems
//     served by a Loop send notifications with Loop.Notify.
//   - Nothing for READ: ProtocolServer lets the filesystem read into the
//     reply buffer itself (the loop hands it one buffer with room for the
//     whole reply), then copies the ReadResult into the reply with Readv.
//     For fuse.ReadResultData over that same buffer (fusefs), that copy is
//     onto itself, which Go's copy skips (the compiler compares the
//     pointers), and fuse.ReadResultFd reads straight into the reply with
//     preadv: READ data is never copied in user space.
//   - Cancelling requests when the connection ends: go-fuse's Server
//     closes the cancel channels of requests in flight; ProtocolServer has
//     no such method, so the loop sends it a FUSE_INTERRUPT for each
//     request still being handled.
//   - Interrupts of extension requests: go-fuse does not know them and
//     would answer EAGAIN, which makes the kernel resend the interrupt at
//     once for as long as the handler runs; the loop drops them.
//   - MountOptions.SingleThreaded is implemented by the loop (a mutex
//     around go-fuse, which interrupts bypass), MaxInflightRequestBytes
//     is not: memory is bounded by MaxReaders buffers of about MaxWrite
//     (the first maxHugeBuffers of them in 2 MiB huge pages, see
//     newReader).
//   - HandleRequest allocates its request state (about 1 KiB and a
//     channel) per call, where go-fuse's Server pools it; this cannot be
//     avoided from outside go-fuse, and costs less than the system calls.
package fuseloop

import (
	"errors"
	"fmt"
	"log"
	"math"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Request is a request for an extension opcode, as the kernel sent it.
type Request struct {
	// InHeader carries the opcode, the unique ID, the node ID (0 for
	// requests about no node, such as FUSE_IOMAP_CONFIG) and the caller.
	fuse.InHeader
	// Payload is everything after the 40-byte header. It lives in the
	// reader's buffer and is reused for the next request once the
	// handler returns: copy what must outlive the call.
	Payload []byte
}

// Handler answers an extension opcode. A zero errno sends reply after
// the reply header; a non-zero errno sends the header alone with the
// error, and reply is ignored. Handlers run on reader goroutines,
// concurrently with each other and with go-fuse's requests, and should
// not block for long: each one holds a reader. A handler that panics is
// answered EIO and logged.
type Handler func(req Request) (reply []byte, errno syscall.Errno)

// Options configure a Loop. The zero value is ready to use.
type Options struct {
	// MaxReaders bounds the goroutines reading /dev/fuse, which is also
	// the number of requests handled at once; each one holds a buffer
	// of about MaxWrite (1 MiB + 8 KiB for fusefs) and, while it waits
	// in read(2), an OS thread. Default: DefaultMaxReaders(). At least
	// 2, so that the INIT handshake cannot deadlock.
	MaxReaders int
	// Extensions are the opcodes the loop answers itself, by opcode,
	// ahead of go-fuse (FUSE_INIT and FUSE_INTERRUPT cannot be taken
	// over). The map is copied by New.
	Extensions map[uint32]Handler
	// InitHook, if set, sees the kernel's INIT and may change go-fuse's
	// reply before it is sent, e.g. to accept a capability go-fuse does
	// not know, or to record what was negotiated. It runs once, before
	// any extension request can be read. (go-fuse alone echoes a flag
	// the kernel offers if it is in MountOptions.ExtraCapabilities,
	// which is enough to accept FUSE_IOMAP, bit 43.)
	InitHook func(in *fuse.InitIn, out *fuse.InitOut)
	// Logf receives the loop's own complaints (malformed requests,
	// failed writes, panicking handlers); go-fuse logs through
	// MountOptions.Logger. Default: log.Printf.
	Logf func(format string, args ...any)
}

// DefaultMaxReaders is the default for Options.MaxReaders: twice
// GOMAXPROCS, at least 4, at most 16. Requests mostly wait for device
// reads or the kernel, so about two per CPU keep the CPUs busy; fusefs
// lets only as many device reads run at once anyway (LimitDevice), and
// every reader costs a thread and a MaxWrite buffer.
func DefaultMaxReaders() int {
	return min(max(2*runtime.GOMAXPROCS(0), 4), 16)
}

// Loop serves one FUSE connection.
type Loop struct {
	fd         int
	fs         fuse.RawFileSystem
	ps         *fuse.ProtocolServer
	ext        map[uint32]Handler
	initHook   func(in *fuse.InitIn, out *fuse.InitOut)
	logf       func(format string, args ...any)
	debug      bool
	maxReaders int32
	// maxIdle is how many readers may wait in read(2) at once.
	maxIdle int32
	// serial, if set, serializes go-fuse's requests
	// (MountOptions.SingleThreaded).
	serial *sync.Mutex

	// Buffer geometry, fixed before the first reader starts: requests
	// are read into buf[:readSize] of a bufSize buffer, and replies are
	// built in the rest.
	readSize, bufSize int
	// maxReply bounds the reply a request may ask for (for a
	// well-behaved kernel: max_pages pages, or an xattr).
	maxReply int

	// write sends one reply or notification; a test hook.
	write func(b []byte) error

	idle  atomic.Int32 // readers in (or about to enter) read(2)
	total atomic.Int32 // readers running
	wg    sync.WaitGroup
	spare sync.Pool    // *reader, of readers that have exited
	huge  atomic.Int32 // readers with a buffer in a huge page (newReader)

	mu      sync.Mutex
	readers map[*reader]struct{}
	err     error // the first fatal read error

	ended      atomic.Bool // the kernel ended the connection
	cancelOnce sync.Once

	closeMu sync.RWMutex // held for writing to close fd, for reading by Notify
	closed  bool
	unmount sync.Once
}

// New takes over fd, an open /dev/fuse descriptor on which the kernel has
// queued INIT (the mount is created, attached or not), and answers INIT:
// when New returns, the kernel has accepted the reply and readers are
// already serving requests. Call Serve to wait for the end of the
// connection. fs is served through go-fuse with mopts (MaxWrite,
// capabilities, logger; options that go into a mount string have no
// effect: the mount exists).
//
// The loop owns fd from then on, also when New fails: it is closed at
// once, except when the kernel refused the INIT reply itself, where
// readers have started and keep fd open until the kernel ends the
// connection (the helper that created the mount closes it on error).
func New(fd int, fs fuse.RawFileSystem, mopts *fuse.MountOptions, opts Options) (*Loop, error) {
	l, err := newLoop(fd, fs, mopts, opts)
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil, err
	}
	if err := l.init(); err != nil {
		return nil, err
	}
	return l, nil
}

// newLoop checks the arguments and sets the loop up without any I/O, so
// that tests can hook the write function before INIT.
func newLoop(fd int, fs fuse.RawFileSystem, mopts *fuse.MountOptions, opts Options) (*Loop, error) {
	if fd < 0 {
		return nil, fmt.Errorf("fuseloop: invalid /dev/fuse descriptor %d", fd)
	}
	if fs == nil {
		return nil, errors.New("fuseloop: no filesystem")
	}
	if mopts == nil {
		mopts = &fuse.MountOptions{}
	}
	ext := make(map[uint32]Handler, len(opts.Extensions))
	for op, h := range opts.Extensions {
		if h == nil {
			continue
		}
		if op == opInit || op == opInterrupt {
			return nil, fmt.Errorf("fuseloop: opcode %d cannot be an extension: the loop needs go-fuse to see it", op)
		}
		ext[op] = h
	}
	maxReaders := opts.MaxReaders
	if maxReaders <= 0 {
		maxReaders = DefaultMaxReaders()
	}
	maxReaders = max(maxReaders, 2)
	logf := opts.Logf
	if logf == nil {
		logf = log.Printf
	}
	l := &Loop{
		fd:         fd,
		fs:         fs,
		ps:         fuse.NewProtocolServer(fs, mopts),
		ext:        ext,
		initHook:   opts.InitHook,
		logf:       logf,
		debug:      mopts.Debug,
		maxReaders: int32(maxReaders),
		// As go-fuse's Server: about one waiting reader per CPU
		// takes a burst of requests at once.
		maxIdle: int32(min(max(runtime.GOMAXPROCS(0), 2), maxReaders)),
		readers: map[*reader]struct{}{},
	}
	if mopts.SingleThreaded {
		l.serial = new(sync.Mutex)
	}
	l.setGeometry(mopts.MaxWrite, 0)
	l.write = l.writeFD
	return l, nil
}

// Serve waits until the kernel ends the connection (the filesystem is
// unmounted, or the connection aborted) and every reader has returned,
// then closes the descriptor, calls the filesystem's OnUnmount and
// returns nil; or the first read error that was not the end of the
// connection, once all readers have stopped.
func (l *Loop) Serve() error {
	l.wg.Wait()
	l.closeFD()
	l.unmount.Do(l.fs.OnUnmount)
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Notify sends an unsolicited notification: a reply header with unique
// 0 and the notification code in the error field, then payload (for
// example FUSE_NOTIFY_INVAL_INODE, or the iomap mapping upserts). It may
// be called from any goroutine once New has returned, and fails once the
// loop has closed the descriptor. The kernel's answer to a notification
// is the errno of the write: ENOENT, for instance, when it has no such
// inode.
func (l *Loop) Notify(code int32, payload []byte) error {
	if code <= 0 {
		return fmt.Errorf("fuseloop: notification code %d is not positive", code)
	}
	if len(payload) > math.MaxUint32-outHeaderSize {
		return fmt.Errorf("fuseloop: notification of %d bytes", len(payload))
	}
	b := make([]byte, outHeaderSize+len(payload))
	putOutHeader(b, len(b), code, 0)
	copy(b[outHeaderSize:], payload)
	l.closeMu.RLock()
	defer l.closeMu.RUnlock()
	if l.closed {
		return fmt.Errorf("fuseloop: notification %d: %w", code, os.ErrClosed)
	}
	return l.write(b)
}

// closeFD closes the descriptor once; Notify holds closeMu while it
// writes, so it never writes to a number that has been reused.
func (l *Loop) closeFD() {
	l.closeMu.Lock()
	defer l.closeMu.Unlock()
	if !l.closed {
		l.closed = true
		unix.Close(l.fd)
	}
}

// writeFD writes one message to the descriptor. /dev/fuse takes a reply
// whole or not at all.
func (l *Loop) writeFD(b []byte) error {
	for {
		_, err := unix.Write(l.fd, b)
		if err != unix.EINTR {
			return err
		}
	}
}

// init reads and answers INIT in the calling goroutine, then starts the
// readers before writing the reply: the kernel may send requests
// (FUSE_IOMAP_CONFIG) before that write returns.
func (l *Loop) init() error {
	fail := func(err error) error {
		l.closeFD()
		return err
	}
	buf := newBuffer(l.bufSize)
	n, err := l.read(buf[:l.readSize])
	if err != nil {
		if errors.Is(err, errEnded) {
			return fail(errors.New("fuseloop: the connection ended before INIT"))
		}
		return fail(fmt.Errorf("fuseloop: reading INIT: %w", err))
	}
	h, ok := l.header(buf[:n])
	if !ok {
		return fail(errors.New("fuseloop: malformed first request"))
	}
	if h.Opcode != opInit {
		l.replyError(h, syscall.EIO)
		return fail(fmt.Errorf("fuseloop: first request is opcode %d, not INIT", h.Opcode))
	}
	var in fuse.InitIn
	copyStruct(&in, buf[:n])
	reply, st := l.serveFuse(&reader{buf: buf}, n, h)
	if st.Ok() && len(reply) >= outHeaderSize && outHeaderError(reply) != 0 {
		// Let the kernel know, so that the mount fails now.
		l.writeReply(h, reply)
		return fail(fmt.Errorf("fuseloop: INIT refused (kernel offered FUSE %d.%d): %v", in.Major, in.Minor, outHeaderError(reply)))
	}
	if !st.Ok() || len(reply) < outHeaderSize+initOutMinSize {
		l.replyError(h, syscall.EIO)
		return fail(fmt.Errorf("fuseloop: go-fuse could not answer INIT: %v, %d bytes", st, len(reply)))
	}
	var out fuse.InitOut
	copyStruct(&out, reply[outHeaderSize:])
	if l.initHook != nil {
		l.initHook(&in, &out)
		copyStructBack(reply[outHeaderSize:], &out)
	}
	maxPages := 0
	if out.Flags&fuse.CAP_MAX_PAGES != 0 {
		maxPages = int(out.MaxPages)
	}
	l.setGeometry(int(out.MaxWrite), maxPages)

	l.spawn()
	if err := l.write(reply); err != nil {
		// Readers are running and may be blocked in read(2), which
		// closing fd would not interrupt; whoever created the mount
		// ends the connection, and then the last one out closes fd.
		go func() {
			l.wg.Wait()
			l.closeFD()
		}()
		return fmt.Errorf("fuseloop: the kernel refused the INIT reply: %w", err)
	}
	if l.debug {
		l.logf("fuseloop: INIT: kernel FUSE %d.%d flags %#x, reply %d.%d flags %#x max_write %d",
			in.Major, in.Minor, in.Flags64(), out.Major, out.Minor, out.Flags64(), out.MaxWrite)
	}
	return nil
}

// setGeometry sizes the readers' buffers for requests of up to maxWrite
// bytes of payload and READ replies of up to maxPages pages. The read
// buffer must hold max_write plus the largest request header, or the
// kernel fails every read with EINVAL; it leaves a page of room for that
// header, as libfuse does.
func (l *Loop) setGeometry(maxWrite, maxPages int) {
	if maxWrite <= 0 {
		maxWrite = defaultMaxWrite
	}
	m := max(alignUp(maxWrite, pageSize), maxPages*pageSize, l.readSize-pageSize)
	l.readSize = max(m+pageSize, minReadBuffer)
	// A small request's reply goes into the same buffer, after the
	// request (see reader.outRegion): one page more leaves room for
	// the reply header and the largest fixed reply before m bytes of
	// payload.
	l.bufSize = l.readSize + pageSize
	l.maxReply = max(m, xattrSizeMax) + pageSize
}
