package fuseloop

import (
	"errors"
	"fmt"
	"runtime/debug"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// errEnded is what read returns when the kernel has ended the connection.
var errEnded = errors.New("fuseloop: connection ended")

// reader is one goroutine's state: its buffer, and the request it is
// handling, so that interrupts and the end of the connection can find
// it.
type reader struct {
	buf []byte
	// unique is the request being handled, 0 between requests.
	unique atomic.Uint64
	// ext says the request is an extension's, which go-fuse does not
	// know about; meaningless while unique is 0.
	ext atomic.Bool
	// iov holds the one-element iovs handed to go-fuse, so that
	// building them does not allocate.
	inIov, outIov [1][]byte
}

// spawn starts a reader unless MaxReaders are running or the connection
// has ended. Counting the new reader as idle before it runs keeps other
// readers from starting one more for the same shortage.
func (l *Loop) spawn() {
	for {
		t := l.total.Load()
		if t >= l.maxReaders || l.ended.Load() {
			return
		}
		if l.total.CompareAndSwap(t, t+1) {
			break
		}
	}
	l.idle.Add(1)
	r, _ := l.spare.Get().(*reader)
	if r == nil || len(r.buf) != l.bufSize {
		r = l.newReader()
	}
	l.mu.Lock()
	l.readers[r] = struct{}{}
	l.mu.Unlock()
	l.wg.Add(1)
	go l.run(r)
}

// run is a reader's life: read a request, handle it, reply, until the
// connection ends or enough other readers are waiting for requests.
func (l *Loop) run(r *reader) {
	defer l.wg.Done()
	for {
		n, err := l.read(r.buf[:l.readSize])
		idle := l.idle.Add(-1)
		if err != nil {
			l.total.Add(-1)
			l.forget(r)
			if errors.Is(err, errEnded) {
				l.ended.Store(true)
				l.cancelOnce.Do(l.cancelInflight)
				return
			}
			l.mu.Lock()
			if l.err == nil {
				l.err = fmt.Errorf("fuseloop: reading /dev/fuse: %w", err)
			}
			l.mu.Unlock()
			l.logf("fuseloop: reading /dev/fuse: %v; reader exits", err)
			return
		}
		if idle == 0 {
			// Nobody is left reading: if this request blocks, the
			// next one must still be read.
			l.spawn()
		}
		l.handle(r, n)
		if l.idle.Load() >= l.maxIdle && l.retire() {
			l.forget(r)
			return
		}
		l.idle.Add(1)
	}
}

// retire gives up a reader's place when enough others wait in read(2):
// one more sleeper would only be woken for the next request in place of
// a reader about to ask for it (a context switch that go-fuse's Server
// avoids the same way), and would hold a thread meanwhile. It reports
// whether the reader should exit. The reader leaves the count first,
// so that a reader finding nobody else reading can start one; if that
// happened in between, it stays instead, unless its place was taken.
func (l *Loop) retire() bool {
	l.total.Add(-1)
	if l.idle.Load() > 0 {
		return true
	}
	for {
		t := l.total.Load()
		if t >= l.maxReaders {
			return true
		}
		if l.total.CompareAndSwap(t, t+1) {
			return false
		}
	}
}

// forget drops an exiting reader, keeping its buffer for the next one.
func (l *Loop) forget(r *reader) {
	l.mu.Lock()
	delete(l.readers, r)
	l.mu.Unlock()
	l.spare.Put(r)
}

// read reads one request. It retries what the kernel asks to be retried
// (EINTR; ENOENT, a request that was interrupted while being read) and
// reports the end of the connection as errEnded: ENODEV from /dev/fuse,
// or a zero-length read, which /dev/fuse never returns and a socket
// standing in for it returns once its peer has gone.
func (l *Loop) read(buf []byte) (int, error) {
	for {
		n, err := unix.Read(l.fd, buf)
		switch err {
		case nil:
			if n == 0 {
				return 0, errEnded
			}
			return n, nil
		case unix.EINTR, unix.ENOENT:
			continue
		case unix.EAGAIN:
			// A non-blocking descriptor: wait rather than spin.
			unix.Poll([]unix.PollFd{{Fd: int32(l.fd), Events: unix.POLLIN}}, -1)
			continue
		case unix.ENODEV:
			return 0, errEnded
		}
		return 0, err
	}
}

// handle answers the request in r.buf[:n].
func (l *Loop) handle(r *reader, n int) {
	buf := r.buf
	h, ok := l.header(buf[:n])
	if !ok {
		return
	}
	handler, isExt := l.ext[h.Opcode]
	// ext before unique: whoever sees this request's unique ID sees
	// whose it is.
	r.ext.Store(isExt)
	r.unique.Store(h.Unique)
	defer r.unique.Store(0)
	if isExt {
		l.serveExtension(buf, n, h, handler)
		return
	}
	if h.Opcode == opInterrupt && l.interruptsExtension(buf[:n]) {
		return
	}
	reply, st := l.serveFuse(r, n, h)
	if !st.Ok() {
		if expectsReply(h.Opcode) {
			l.replyError(h, syscall.Errno(st))
		}
		return
	}
	if len(reply) > 0 {
		l.writeReply(h, reply)
	}
}

// header decodes and checks a request's header. A request shorter than
// a header cannot even be answered and is dropped; one whose length
// field disagrees with what was read is answered EIO (if it expects an
// answer), so that the caller in the kernel does not wait forever.
func (l *Loop) header(b []byte) (fuse.InHeader, bool) {
	if len(b) < inHeaderSize {
		l.logf("fuseloop: dropping a request of %d bytes, shorter than a header", len(b))
		return fuse.InHeader{}, false
	}
	h := decodeInHeader(b)
	if int(h.Length) != len(b) {
		l.logf("fuseloop: request %d (opcode %d): header says %d bytes, read %d", h.Unique, h.Opcode, h.Length, len(b))
		if expectsReply(h.Opcode) {
			l.replyError(h, syscall.EIO)
		}
		return fuse.InHeader{}, false
	}
	return h, true
}

// serveFuse hands the request in r.buf[:n] to go-fuse and returns the
// reply, built in r.buf after the request (or in a buffer of its own if
// it does not fit), or nothing for requests that get no reply. A status
// other than OK means go-fuse did not get to handle the request (it has
// been logged).
func (l *Loop) serveFuse(r *reader, n int, h fuse.InHeader) ([]byte, fuse.Status) {
	need := replyRoom(h.Opcode, r.buf[:n])
	if need > l.maxReply+outHeaderSize+maxOutData {
		// No kernel asks for more than max_pages pages or an xattr.
		l.logf("fuseloop: request %d (opcode %d) asks for a reply of %d bytes", h.Unique, h.Opcode, need)
		return nil, fuse.EIO
	}
	out := outRegion(r.buf, n)
	if need > len(out) {
		// A request with both a large payload and a large reply:
		// only IOCTL can be one, and fusefs has none.
		out = make([]byte, need)
	}
	r.inIov[0], r.outIov[0] = r.buf[:n], out
	defer func() { r.inIov[0], r.outIov[0] = nil, nil }()
	if l.serial != nil && h.Opcode != opInterrupt {
		// An interrupt must get through while the request it is
		// about holds the lock.
		l.serial.Lock()
		defer l.serial.Unlock()
	}
	m, st := l.handleRequest(r)
	if !st.Ok() {
		// Only a request too short for its header, or a reply
		// buffer too small, both ruled out above.
		l.logf("fuseloop: go-fuse could not handle request %d (opcode %d): %v", h.Unique, h.Opcode, st)
		return nil, st
	}
	return out[:m], fuse.OK
}

// handleRequest calls go-fuse. go-fuse recovers from panics in the
// filesystem, but not in its own parsing: a request that trips it fails
// alone (EIO), not the whole daemon.
func (l *Loop) handleRequest(r *reader) (n int, st fuse.Status) {
	defer func() {
		if p := recover(); p != nil {
			l.logf("fuseloop: go-fuse panicked: %v\n%s", p, debug.Stack())
			n, st = 0, fuse.EIO
		}
	}()
	return l.ps.HandleRequest(r.inIov[:], r.outIov[:])
}

// serveExtension answers a request with its extension handler.
func (l *Loop) serveExtension(buf []byte, n int, h fuse.InHeader, handler Handler) {
	if l.debug {
		l.logf("fuseloop: rx %d: opcode %d n%d %d bytes", h.Unique, h.Opcode, h.NodeId, n-inHeaderSize)
	}
	reply, errno := l.callExtension(handler, Request{InHeader: h, Payload: buf[inHeaderSize:n:n]})
	if errno != 0 {
		reply = nil
	}
	if len(reply) > l.maxReply {
		l.logf("fuseloop: the handler of opcode %d returned %d bytes, more than %d", h.Opcode, len(reply), l.maxReply)
		reply, errno = nil, syscall.EIO
	}
	if l.debug {
		l.logf("fuseloop: tx %d: %v, %d bytes", h.Unique, errno, len(reply))
	}
	out := outRegion(buf, n)
	size := outHeaderSize + len(reply)
	if size > len(out) {
		out = make([]byte, size)
	}
	putOutHeader(out, size, -int32(errno), h.Unique)
	copy(out[outHeaderSize:], reply)
	l.writeReply(h, out[:size])
}

// callExtension runs a handler, turning a panic into EIO: a bug in one
// handler should fail one request, not the mount.
func (l *Loop) callExtension(handler Handler, req Request) (reply []byte, errno syscall.Errno) {
	defer func() {
		if p := recover(); p != nil {
			l.logf("fuseloop: the handler of opcode %d panicked: %v\n%s", req.Opcode, p, debug.Stack())
			reply, errno = nil, syscall.EIO
		}
	}()
	return handler(req)
}

// interruptsExtension reports whether the FUSE_INTERRUPT in b is about a
// request an extension is handling. Such an interrupt gets no reply:
// go-fuse would not find the request and answer EAGAIN, which makes the
// kernel send the interrupt again at once, for as long as the handler
// runs. Handlers are not interruptible; the kernel waits for the reply.
func (l *Loop) interruptsExtension(b []byte) bool {
	target, ok := interruptTarget(b)
	if !ok {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for r := range l.readers {
		if r.unique.Load() == target && r.ext.Load() {
			return true
		}
	}
	return false
}

// cancelInflight closes the cancel channels of the requests go-fuse is
// handling when the connection ends, as go-fuse's Server does, by
// handing ProtocolServer an interrupt for each: their replies could not
// be delivered anyway.
func (l *Loop) cancelInflight() {
	var uniques []uint64
	l.mu.Lock()
	for r := range l.readers {
		if u := r.unique.Load(); u != 0 && !r.ext.Load() {
			uniques = append(uniques, u)
		}
	}
	l.mu.Unlock()
	for _, u := range uniques {
		in := make([]byte, interruptInSize)
		putInterrupt(in, u)
		out := make([]byte, outHeaderSize+maxOutData)
		// The reply (EAGAIN if the request has just finished) has
		// nowhere to go.
		l.ps.HandleRequest([][]byte{in}, [][]byte{out})
	}
}

// writeReply sends a reply. ENOENT means the kernel no longer waits for
// it (the request was interrupted, or the connection aborted it), and
// ENODEV that the connection has ended, which the next read reports
// (EPIPE on a socket standing in for /dev/fuse): none is worth a log
// line.
func (l *Loop) writeReply(h fuse.InHeader, b []byte) {
	err := l.write(b)
	switch err {
	case nil, unix.ENOENT, unix.ENODEV, unix.EPIPE:
		return
	}
	l.logf("fuseloop: writing the reply to request %d (opcode %d, %d bytes): %v", h.Unique, h.Opcode, len(b), err)
}

// replyError answers a request with an error and nothing else.
func (l *Loop) replyError(h fuse.InHeader, errno syscall.Errno) {
	b := make([]byte, outHeaderSize)
	putOutHeader(b, outHeaderSize, -int32(errno), h.Unique)
	l.writeReply(h, b)
}
