package fuseloop_test

import (
	"encoding/binary"
	"io"
	"log"
	"os"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"safefs/internal/fuseloop"
)

// BenchmarkWire compares the servers' own cost per request, without the
// kernel's FUSE: the fake kernel's socketpair carries the requests to
// go-fuse's fuse.Server (which serves any descriptor given as /dev/fd/N)
// or to a Loop, both serving fusefs over the small test image. Every
// request is a round trip (send, wait for the reply), except in the
// "x8" cases, which keep 8 requests in flight. It needs no root.
func BenchmarkWire(b *testing.B) {
	img := smallImage(b)
	// go-fuse's Server logs through the standard logger when the fake
	// kernel hangs up (a zero-length read), which would garble the
	// results.
	log.SetOutput(io.Discard)
	defer log.SetOutput(os.Stderr)
	cases := []struct {
		name  string
		depth int
		req   func(node, fh uint64) (op uint32, n uint64, body []byte)
	}{
		{"getattr", 1, func(node, fh uint64) (uint32, uint64, []byte) {
			return opGetattr, node, structBody(&fuse.GetAttrIn{})
		}},
		{"lookup", 1, func(node, fh uint64) (uint32, uint64, []byte) {
			return opLookup, 1, []byte("small\x00")
		}},
		{"read4k", 1, func(node, fh uint64) (uint32, uint64, []byte) {
			return opRead, node, structBody(&fuse.ReadIn{Fh: fh, Offset: 8192, Size: 4096})
		}},
		{"read1m", 1, func(node, fh uint64) (uint32, uint64, []byte) {
			return opRead, node, structBody(&fuse.ReadIn{Fh: fh, Offset: 1 << 20, Size: 1 << 20})
		}},
		{"getattr-x8", 8, func(node, fh uint64) (uint32, uint64, []byte) {
			return opGetattr, node, structBody(&fuse.GetAttrIn{})
		}},
		{"read1m-x8", 8, func(node, fh uint64) (uint32, uint64, []byte) {
			return opRead, node, structBody(&fuse.ReadIn{Fh: fh, Offset: 1 << 20, Size: 1 << 20})
		}},
	}
	for _, c := range cases {
		for _, srv := range []server{goFuseServer, loopServer} {
			b.Run(c.name+"/"+srv.String(), func(b *testing.B) {
				k, node, fh := wireServer(b, img.path, srv)
				op, n, body := c.req(node, fh)
				benchRoundTrips(b, k, op, n, body, c.depth)
			})
		}
	}
}

// wireServer serves img with srv on a fake kernel's socketpair and
// returns the kernel, and the node and handle of the big file.
func wireServer(b *testing.B, img string, srv server) (*fakeKernel, uint64, uint64) {
	b.Helper()
	k, fd := newFakeKernel(b, 1<<20)
	var logs logSink
	fs := openFusefs(b, img, logs.logf)
	mopts := fs.MountOptions()
	mopts.Logger = log.New(&logs, "", 0)
	done := make(chan error, 1)
	var serveFn func()
	switch srv {
	case goFuseServer:
		go func() {
			s, err := fuse.NewServer(fs, "/dev/fd/"+itoa(fd), mopts)
			if err == nil {
				serveFn = s.Serve
			}
			done <- err
		}()
	case loopServer:
		go func() {
			l, err := fuseloop.New(fd, fs, mopts, fuseloop.Options{Logf: logs.logf})
			if err == nil {
				serveFn = func() { l.Serve() }
			}
			done <- err
		}()
	}
	k.send(opInit, 0, initIn(false))
	k.recv(5 * time.Second)
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	stopped := make(chan struct{})
	go func() {
		serveFn()
		close(stopped)
	}()
	b.Cleanup(func() {
		k.close()
		select {
		case <-stopped:
		case <-time.After(10 * time.Second):
			b.Errorf("%v server still running", srv)
		}
	})
	entry := decode[fuse.EntryOut](b, k.ok(opLookup, 1, []byte("big\x00")))
	open := decode[fuse.OpenOut](b, k.ok(opOpen, entry.NodeId, structBody(&fuse.OpenIn{})))
	return k, entry.NodeId, open.Fh
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

// benchRoundTrips sends b.N requests, keeping depth of them in flight,
// and reads the replies without allocating.
func benchRoundTrips(b *testing.B, k *fakeKernel, op uint32, node uint64, body []byte, depth int) {
	reqs := make([][]byte, depth)
	for i := range reqs {
		reqs[i] = request(op, 0, node, body)
	}
	buf := make([]byte, 2<<20)
	ne := binary.NativeEndian
	var unique uint64 = 1 << 32
	send := func(i int) {
		unique += 2
		ne.PutUint64(reqs[i][8:], unique)
		if _, err := unix.Write(k.fd, reqs[i]); err != nil {
			b.Fatal(err)
		}
	}
	recv := func() {
		n, err := unix.Read(k.fd, buf)
		if err != nil || n < outHeaderSize {
			b.Fatalf("read %d: %v", n, err)
		}
		if st := int32(ne.Uint32(buf[4:])); st != 0 {
			b.Fatalf("reply status %d", st)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	inFlight := 0
	for i := range b.N {
		if inFlight == depth {
			recv()
			inFlight--
		}
		send(i % depth)
		inFlight++
	}
	for ; inFlight > 0; inFlight-- {
		recv()
	}
}
