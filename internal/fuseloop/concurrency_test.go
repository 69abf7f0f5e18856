package fuseloop_test

import (
	"encoding/binary"
	"log"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"safefs/internal/fuseloop"
)

// blockingFS answers GETATTR only when released or cancelled, and counts
// how many GETATTRs it holds at once.
type blockingFS struct {
	fuse.RawFileSystem
	release   chan struct{} // closed: answer every GETATTR
	started   chan uint64   // the unique ID of each GETATTR, as it starts
	inFlight  atomic.Int32
	maxSeen   atomic.Int32
	cancelled atomic.Int32
}

func newBlockingFS() *blockingFS {
	return &blockingFS{
		RawFileSystem: fuse.NewDefaultRawFileSystem(),
		release:       make(chan struct{}),
		started:       make(chan uint64, 100),
	}
}

func (f *blockingFS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	n := f.inFlight.Add(1)
	defer f.inFlight.Add(-1)
	for {
		m := f.maxSeen.Load()
		if n <= m || f.maxSeen.CompareAndSwap(m, n) {
			break
		}
	}
	select {
	case f.started <- in.Unique:
	default:
		// Nobody is counting starts any more (the channel holds more
		// than any test waits for): do not block on it.
	}
	select {
	case <-f.release:
		out.Ino = in.NodeId
		return fuse.OK
	case <-cancel:
		f.cancelled.Add(1)
		return fuse.EINTR
	case <-time.After(10 * time.Second):
		return fuse.EIO
	}
}

// waitStarted waits for n GETATTRs to have started.
func (f *blockingFS) waitStarted(t *testing.T, n int) []uint64 {
	t.Helper()
	var out []uint64
	for range n {
		select {
		case u := <-f.started:
			out = append(out, u)
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d of %d GETATTRs started", len(out), n)
		}
	}
	return out
}

func quietMountOptions() *fuse.MountOptions {
	return &fuse.MountOptions{Logger: log.New(&logSink{}, "", 0)}
}

func interruptBody(target uint64) []byte {
	b := make([]byte, 8)
	binary.NativeEndian.PutUint64(b, target)
	return b
}

// TestInterrupt: an INTERRUPT reaches go-fuse, which closes the request's
// cancel channel (the request ends with EINTR, the INTERRUPT gets no
// reply); one for a request go-fuse does not know is answered EAGAIN;
// one for a request an extension is handling gets no reply at all (an
// EAGAIN would make the kernel resend it in a loop).
func TestInterrupt(t *testing.T) {
	k, fd := newFakeKernel(t, 128<<10)
	fs := newBlockingFS()
	extRelease := make(chan struct{})
	extStarted := make(chan struct{}, 1)
	opts := fuseloop.Options{Extensions: map[uint32]fuseloop.Handler{
		opIomapBegin: func(req fuseloop.Request) ([]byte, syscall.Errno) {
			extStarted <- struct{}{}
			<-extRelease
			return []byte("done"), 0
		},
	}}
	l, _ := startLoop(t, k, fd, fs, quietMountOptions(), opts, false)
	s := serve(l)

	u := k.send(opGetattr, 5, structBody(&fuse.GetAttrIn{}))
	fs.waitStarted(t, 1)
	k.send(opInterrupt, 0, interruptBody(u))
	r := k.recv(5 * time.Second)
	if r.Unique != u || r.Status != -int32(syscall.EINTR) {
		t.Errorf("interrupted GETATTR: reply %+v, want EINTR to %d", r, u)
	}
	k.expectNone(100*time.Millisecond, "after the interrupted request's reply")
	if fs.cancelled.Load() != 1 {
		t.Errorf("cancelled %d requests, want 1", fs.cancelled.Load())
	}

	ui := k.send(opInterrupt, 0, interruptBody(123456))
	if r := k.recv(5 * time.Second); r.Unique != ui || r.Status != -int32(syscall.EAGAIN) {
		t.Errorf("interrupt of an unknown request: reply %+v, want EAGAIN to %d", r, ui)
	}

	ue := k.send(opIomapBegin, 0, nil)
	<-extStarted
	k.send(opInterrupt, 0, interruptBody(ue))
	k.expectNone(200*time.Millisecond, "interrupt of an extension request")
	close(extRelease)
	if r := k.recv(5 * time.Second); r.Unique != ue || r.Status != 0 || string(r.Data) != "done" {
		t.Errorf("extension after an interrupt: reply %+v", r)
	}

	k.close()
	if err := s.wait(t, 5*time.Second); err != nil {
		t.Errorf("Serve: %v", err)
	}
}

// TestEndCancelsRequests: when the connection ends, requests still being
// handled are cancelled (as go-fuse's Server does), so Serve returns
// without waiting for them to finish on their own.
func TestEndCancelsRequests(t *testing.T) {
	baseline := runtime.NumGoroutine()
	k, fd := newFakeKernel(t, 128<<10)
	fs := newBlockingFS()
	l, _ := startLoop(t, k, fd, fs, quietMountOptions(), fuseloop.Options{MaxReaders: 4}, false)
	s := serve(l)
	k.send(opGetattr, 1, structBody(&fuse.GetAttrIn{}))
	k.send(opGetattr, 2, structBody(&fuse.GetAttrIn{}))
	fs.waitStarted(t, 2)
	k.close()
	start := time.Now()
	if err := s.wait(t, 5*time.Second); err != nil {
		t.Errorf("Serve: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Serve took %v to return", d)
	}
	if n := fs.cancelled.Load(); n != 2 {
		t.Errorf("%d requests cancelled, want 2", n)
	}
	goroutinesSettle(t, baseline)
}

// TestReadersGrow: requests that block do not stop the loop from reading
// more, up to MaxReaders at once and no further; the others wait in the
// kernel's queue until a reader is free. Afterwards the readers shrink
// back to those allowed to wait.
func TestReadersGrow(t *testing.T) {
	const maxReaders = 5
	k, fd := newFakeKernel(t, 128<<10)
	fs := newBlockingFS()
	l, _ := startLoop(t, k, fd, fs, quietMountOptions(), fuseloop.Options{MaxReaders: maxReaders}, false)
	s := serve(l)
	if n := fuseloop.Readers(l); n != 1 {
		t.Errorf("%d readers after INIT, want 1", n)
	}
	sent := map[uint64]bool{}
	for i := range 2 * maxReaders {
		sent[k.send(opGetattr, uint64(i+1), structBody(&fuse.GetAttrIn{}))] = true
	}
	fs.waitStarted(t, maxReaders)
	time.Sleep(100 * time.Millisecond)
	if n := fs.maxSeen.Load(); n != maxReaders {
		t.Errorf("%d requests handled at once, want %d", n, maxReaders)
	}
	if n := fuseloop.Readers(l); n != maxReaders {
		t.Errorf("%d readers, want %d", n, maxReaders)
	}
	close(fs.release)
	for range 2 * maxReaders {
		r := k.recv(5 * time.Second)
		if !sent[r.Unique] || r.Status != 0 {
			t.Errorf("reply %+v", r)
		}
		delete(sent, r.Unique)
	}
	// Once idle, readers beyond those allowed to wait give up their
	// thread.
	deadline := time.Now().Add(5 * time.Second)
	for fuseloop.Readers(l) > fuseloop.MaxIdle(l) {
		if time.Now().After(deadline) {
			t.Errorf("%d readers after the burst, want at most %d", fuseloop.Readers(l), fuseloop.MaxIdle(l))
			break
		}
		k.ok(opGetattr, 1, structBody(&fuse.GetAttrIn{}))
	}
	k.close()
	if err := s.wait(t, 5*time.Second); err != nil {
		t.Errorf("Serve: %v", err)
	}
}

// TestSingleThreaded: MountOptions.SingleThreaded serializes go-fuse's
// requests, but not extensions.
func TestSingleThreaded(t *testing.T) {
	k, fd := newFakeKernel(t, 128<<10)
	fs := newBlockingFS()
	mopts := quietMountOptions()
	mopts.SingleThreaded = true
	opts := fuseloop.Options{Extensions: map[uint32]fuseloop.Handler{
		opIomapBegin: func(fuseloop.Request) ([]byte, syscall.Errno) { return nil, 0 },
	}}
	l, _ := startLoop(t, k, fd, fs, mopts, opts, false)
	s := serve(l)
	k.send(opGetattr, 1, structBody(&fuse.GetAttrIn{}))
	k.send(opGetattr, 2, structBody(&fuse.GetAttrIn{}))
	// Either may be the one that got the lock; the other waits for it.
	first := fs.waitStarted(t, 1)
	k.ok(opIomapBegin, 0, nil) // not held up by the GETATTR
	time.Sleep(100 * time.Millisecond)
	if n := fs.inFlight.Load(); n != 1 {
		t.Errorf("%d GETATTRs at once, want 1", n)
	}
	k.send(opInterrupt, 0, interruptBody(first[0]))
	fs.waitStarted(t, 1)
	close(fs.release)
	for range 2 {
		k.recv(5 * time.Second)
	}
	if n := fs.maxSeen.Load(); n != 1 {
		t.Errorf("%d GETATTRs at once, want 1", n)
	}
	k.close()
	s.wait(t, 5*time.Second)
}

// TestExtensionPanic: a panicking handler fails its request with EIO and
// is logged; the loop goes on.
func TestExtensionPanic(t *testing.T) {
	k, fd := newFakeKernel(t, 128<<10)
	var logs logSink
	opts := fuseloop.Options{Logf: logs.logf, Extensions: map[uint32]fuseloop.Handler{
		opIomapBegin: func(fuseloop.Request) ([]byte, syscall.Errno) { panic("boom") },
	}}
	l, _ := startLoop(t, k, fd, fuse.NewDefaultRawFileSystem(), quietMountOptions(), opts, false)
	s := serve(l)
	if r := k.call(opIomapBegin, 0, nil); r.Status != -int32(syscall.EIO) {
		t.Errorf("panicking extension: status %d, want -EIO", r.Status)
	}
	if r := k.call(opGetattr, 1, structBody(&fuse.GetAttrIn{})); r.Status != -int32(syscall.ENOSYS) {
		t.Errorf("GETATTR after the panic: status %d, want ENOSYS from the default filesystem", r.Status)
	}
	if !logs.contains("panicked: boom") {
		t.Errorf("no log line about the panic: %q", logs.Lines())
	}
	k.close()
	s.wait(t, 5*time.Second)
}

// TestNotifyConcurrent: notifications from many goroutines, while the
// loop answers requests, arrive whole.
func TestNotifyConcurrent(t *testing.T) {
	k, fd := newFakeKernel(t, 128<<10)
	l, _ := startLoop(t, k, fd, fuse.NewDefaultRawFileSystem(), quietMountOptions(), fuseloop.Options{}, false)
	s := serve(l)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 20 {
				if err := l.Notify(int32(100+i), []byte(strings.Repeat("x", j))); err != nil {
					t.Errorf("Notify: %v", err)
				}
			}
		}()
	}
	u := k.send(opGetattr, 1, structBody(&fuse.GetAttrIn{}))
	gotReply := false
	for range 8*20 + 1 {
		r := k.recv(5 * time.Second)
		switch {
		case r.Unique == u:
			gotReply = true
		case r.Unique != 0 || r.Status < 100 || r.Status >= 108 || strings.Trim(string(r.Data), "x") != "":
			t.Errorf("bad notification %+v", r)
		}
	}
	if !gotReply {
		t.Error("no reply to GETATTR")
	}
	wg.Wait()
	if err := l.Notify(0, nil); err == nil {
		t.Error("Notify accepted code 0")
	}
	k.close()
	s.wait(t, 5*time.Second)
}
