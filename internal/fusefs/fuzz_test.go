package fusefs_test

import (
	"encoding/binary"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"safefs/internal/ext4"
	"safefs/internal/fusefs"
	"safefs/internal/iomap/abi"
	"safefs/internal/testimg"
)

// FuzzRequest feeds arbitrary FUSE requests to the server's request path
// as /dev/fuse would deliver them: internal/fuseloop reading one end of
// a SOCK_SEQPACKET socket pair, go-fuse's protocol code and fusefs behind
// it, serving an image of the test matrix (FUSE iomap negotiated, so the
// iomap opcodes are served too). One server per fuzzing process serves
// every input. An input is a script of requests (see fuzzRequests); after
// them comes a GETATTR of the root, whose answer must arrive within 10 s.
// Every reply must be well formed (its length as sent, an error with no
// payload, a unique the fuzzer used), and nothing may panic (go-fuse and
// fuseloop recover panics and log them: a logged panic fails the input).
//
// The kernel never sends a second INIT or a DESTROY before the end, and
// both end the session, so the script cannot send them.
func FuzzRequest(f *testing.F) {
	k := fuzzServer(f)
	for _, s := range k.seeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, script []byte) {
		k.run(t, fuzzRequests(script))
	})
}

// fuzzReq is one request of a script.
type fuzzReq struct {
	op      uint32
	node    uint64
	badLen  bool // the header's length is one more than the request's
	payload []byte
}

// iomapOps are the extension opcodes the script's opcodes 200..255 map
// to.
var iomapOps = []uint32{abi.OpFreezeFS, abi.OpUnfreezeFS, abi.OpShutdownFS, abi.OpIomapConfig, abi.OpIomapIoend, abi.OpIomapBegin, abi.OpIomapEnd}

// fuzzRequests reads a script: records of an opcode byte (0..199 as it
// is, 200..255 the iomap opcodes), a little-endian uint16 node ID
// (0xffff: one beyond any inode), a flags byte (bit 0: a wrong length in
// the header), a little-endian uint16 payload length and the payload; at
// most 8 records.
func fuzzRequests(script []byte) []fuzzReq {
	var out []fuzzReq
	for len(script) >= 6 && len(out) < 8 {
		r := fuzzReq{op: uint32(script[0]), node: uint64(binary.LittleEndian.Uint16(script[1:])), badLen: script[3]&1 != 0}
		if script[0] >= 200 {
			r.op = iomapOps[int(script[0]-200)%len(iomapOps)]
		}
		if r.node == 0xffff {
			r.node = 1 << 40
		}
		n := min(int(binary.LittleEndian.Uint16(script[4:])), len(script)-6)
		r.payload, script = script[6:6+n], script[6+n:]
		if r.op == opInit || r.op == opDestroy {
			continue
		}
		out = append(out, r)
	}
	return out
}

// fuzzScript makes a script (for seeds).
func fuzzScript(reqs ...fuzzReq) []byte {
	var out []byte
	for _, r := range reqs {
		op := byte(r.op)
		for i, x := range iomapOps {
			if r.op == x {
				op = byte(200 + i)
			}
		}
		out = append(out, op)
		out = binary.LittleEndian.AppendUint16(out, uint16(r.node))
		flags := byte(0)
		if r.badLen {
			flags = 1
		}
		out = append(out, flags)
		out = binary.LittleEndian.AppendUint16(out, uint16(len(r.payload)))
		out = append(out, r.payload...)
	}
	return out
}

// More FUSE opcodes.
const (
	opForget      = 2
	opReadlink    = 5
	opStatfs      = 17
	opRelease     = 18
	opGetxattr    = 22
	opListxattr   = 23
	opOpendir     = 27
	opReaddir     = 28
	opReleasedir  = 29
	opAccess      = 34
	opInterrupt   = 36
	opDestroy     = 38
	opIoctl       = 39
	opBatchForget = 42
	opReaddirplus = 44
	opStatx       = 52
)

// fuzzKernel is the simulated kernel of FuzzRequest.
type fuzzKernel struct {
	img string
	// inodes of the image's objects, for seeds.
	dir, file, symlink, xattrs uint64

	mu     sync.Mutex // one input at a time (the fuzzer runs them so anyway)
	fd     int
	unique uint64
	buf    []byte
	logs   struct {
		sync.Mutex
		lines []string
	}
}

var (
	fuzzOnce sync.Once
	fuzzK    *fuzzKernel
	fuzzErr  error
)

// fuzzServer starts the process's server, once.
func fuzzServer(f *testing.F) *fuzzKernel {
	img := testimg.Build(f, testimg.SpecNamed(f, "ext4-default"))
	dev, err := os.Open(img)
	if err != nil {
		f.Fatal(err)
	}
	fsys, err := ext4.Open(fusefs.LimitDevice(dev, 0), nil)
	if err != nil {
		f.Fatal(err)
	}
	ino := func(p string) uint64 {
		in, err := fsys.Inode(2)
		for _, part := range strings.Split(p, "/") {
			if err != nil {
				break
			}
			var n uint32
			if n, _, err = fsys.Lookup(in, []byte(part)); err == nil {
				in, err = fsys.Inode(n)
			}
		}
		if err != nil {
			f.Fatalf("%s: %v", p, err)
		}
		return uint64(in.Ino)
	}
	fuzzOnce.Do(func() {
		k := &fuzzKernel{img: img, buf: make([]byte, 2<<20)}
		k.dir, k.file, k.symlink, k.xattrs = ino("dirs/many"), ino("sparse/pieces"), ino("symlinks/len100"), ino("xattrs/basic")
		fuzzErr = k.start(fsys)
		fuzzK = k
	})
	if fuzzErr != nil {
		f.Fatal(fuzzErr)
	}
	return fuzzK
}

func (k *fuzzKernel) logf(format string, args ...any) {
	k.logs.Lock()
	k.logs.lines = append(k.logs.lines, fmt.Sprintf(format, args...))
	k.logs.Unlock()
}

// start starts the server on a socket pair and plays the kernel's INIT
// (offering FUSE iomap) and FUSE_IOMAP_CONFIG. The server runs until the
// process ends.
func (k *fuzzKernel) start(fsys *ext4.FS) error {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	for _, fd := range fds {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
	}
	k.fd = fds[1]
	// A server that stops reading requests must fail the input, not
	// block the fuzzer's write for ever.
	tv := unix.NsecToTimeval(int64(10 * time.Second))
	if err := unix.SetsockoptTimeval(k.fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return err
	}
	in := fuse.InitIn{Major: 7, Minor: abi.KernelMinorVersion, MaxReadAhead: 1 << 20,
		Flags: fuse.CAP_ASYNC_READ | fuse.CAP_BIG_WRITES | fuse.CAP_MAX_PAGES | fuse.CAP_INIT_EXT, Flags2: abi.InitFlags2Iomap}
	if _, err := k.send(fuzzReq{op: opInit, payload: body(&in)}); err != nil {
		return err
	}
	started := make(chan error, 1)
	go func() {
		srv, err := fusefs.NewServer(fds[0], fsys, fusefs.Options{Logf: k.logf, IomapDevice: abi.DevFuseblk, Source: simSource})
		started <- err
		if err == nil {
			srv.Serve()
		}
	}()
	if _, _, err := k.await(k.unique); err != nil {
		return fmt.Errorf("INIT: %v", err)
	}
	cin := abi.ConfigIn{MaxBytes: 1<<63 - 1}
	if _, err := k.send(fuzzReq{op: abi.OpIomapConfig, payload: abi.Marshal(&cin)}); err != nil {
		return err
	}
	if _, _, err := k.await(k.unique); err != nil {
		return fmt.Errorf("FUSE_IOMAP_CONFIG: %v", err)
	}
	return <-started
}

// send writes one request; it returns the unique ID it got, and an
// error if the server did not take the request within 10 s.
func (k *fuzzKernel) send(r fuzzReq) (uint64, error) {
	k.unique++
	n := int(unsafe.Sizeof(fuse.InHeader{})) + len(r.payload)
	h := fuse.InHeader{Length: uint32(n), Opcode: r.op, Unique: k.unique, NodeId: r.node}
	if r.badLen {
		h.Length++
	}
	msg := append(unsafe.Slice((*byte)(unsafe.Pointer(&h)), unsafe.Sizeof(h)), r.payload...)
	if _, err := unix.Write(k.fd, msg); err != nil {
		return k.unique, fmt.Errorf("sending request %d (opcode %d): %v (the server stopped reading requests)", k.unique, r.op, err)
	}
	return k.unique, nil
}

// await reads replies until the one to unique, checking each: it
// returns that reply's errno and payload, or why the server's answers are
// wrong.
func (k *fuzzKernel) await(unique uint64) (int32, []byte, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		ms := int(time.Until(deadline) / time.Millisecond)
		if ms <= 0 {
			return 0, nil, fmt.Errorf("no answer to request %d within 10 s", unique)
		}
		pfd := []unix.PollFd{{Fd: int32(k.fd), Events: unix.POLLIN}}
		if n, err := unix.Poll(pfd, ms); err != nil || n == 0 {
			continue
		}
		n, err := unix.Read(k.fd, k.buf)
		if err != nil || n < 16 {
			return 0, nil, fmt.Errorf("reading a reply: %d bytes, %v", n, err)
		}
		var oh fuse.OutHeader
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&oh)), unsafe.Sizeof(oh)), k.buf)
		payload := k.buf[16:n]
		switch {
		case int(oh.Length) != n:
			return 0, nil, fmt.Errorf("reply to %d: header says %d bytes, message has %d", oh.Unique, oh.Length, n)
		case oh.Unique == 0:
			if oh.Status != abi.NotifyIomapUpsertMappings {
				return 0, nil, fmt.Errorf("unexpected notification %d", oh.Status)
			}
			continue
		case oh.Unique > k.unique:
			return 0, nil, fmt.Errorf("reply to request %d, which was never sent", oh.Unique)
		case oh.Status > 0 || oh.Status < -4095:
			return 0, nil, fmt.Errorf("reply to %d: status %d is no errno", oh.Unique, oh.Status)
		case oh.Status != 0 && len(payload) > 0:
			return 0, nil, fmt.Errorf("error reply %d to %d carries %d bytes", oh.Status, oh.Unique, len(payload))
		}
		if oh.Unique == unique {
			return oh.Status, payload, nil
		}
	}
}

// run sends the requests and a GETATTR of the root, and checks the
// answers and the log.
func (k *fuzzKernel) run(t *testing.T, reqs []fuzzReq) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, r := range reqs {
		if _, err := k.send(r); err != nil {
			t.Fatal(err)
		}
	}
	u, err := k.send(fuzzReq{op: opGetattr, node: 1, payload: body(&fuse.GetAttrIn{})})
	if err != nil {
		t.Fatal(err)
	}
	errno, _, err := k.await(u)
	if err != nil {
		t.Fatal(err)
	}
	if errno != 0 {
		t.Fatalf("GETATTR of the root after the requests: errno %d", -errno)
	}
	k.logs.Lock()
	lines := k.logs.lines
	k.logs.lines = nil
	k.logs.Unlock()
	for _, l := range lines {
		if strings.Contains(l, "panic") {
			t.Fatalf("the server logged a panic: %s", l)
		}
	}
}

// seeds are scripts of well-formed requests on the image's objects.
func (k *fuzzKernel) seeds() [][]byte {
	name := func(s string) []byte { return append([]byte(s), 0) }
	le := binary.LittleEndian
	xattr := func(size uint32, n string) []byte {
		b := le.AppendUint32(nil, size)
		b = le.AppendUint32(b, 0)
		return append(b, name(n)...)
	}
	forgets := le.AppendUint32(nil, 2)
	forgets = le.AppendUint32(forgets, 0)
	for _, n := range []uint64{k.file, k.dir} {
		forgets = le.AppendUint64(forgets, n)
		forgets = le.AppendUint64(forgets, 1)
	}
	begin := abi.BeginIn{AttrIno: k.file, Pos: 0, Count: 1 << 20}
	return [][]byte{
		fuzzScript(
			fuzzReq{op: opLookup, node: 1, payload: name("dirs")},
			fuzzReq{op: opGetattr, node: k.dir, payload: body(&fuse.GetAttrIn{})},
			fuzzReq{op: opStatfs, node: 1},
		),
		fuzzScript(
			fuzzReq{op: opOpen, node: k.file, payload: body(&fuse.OpenIn{})},
			fuzzReq{op: opRead, node: k.file, payload: body(&fuse.ReadIn{Offset: 1 << 20, Size: 128 << 10})},
			fuzzReq{op: opLseek, node: k.file, payload: body(&fuse.LseekIn{Offset: 4096, Whence: unix.SEEK_DATA})},
			fuzzReq{op: opRelease, node: k.file, payload: body(&fuse.ReleaseIn{})},
		),
		fuzzScript(
			fuzzReq{op: opOpendir, node: k.dir, payload: body(&fuse.OpenIn{})},
			fuzzReq{op: opReaddir, node: k.dir, payload: body(&fuse.ReadIn{Size: 4096})},
			fuzzReq{op: opReaddirplus, node: k.dir, payload: body(&fuse.ReadIn{Offset: 3, Size: 4096})},
			fuzzReq{op: opReleasedir, node: k.dir, payload: body(&fuse.ReleaseIn{})},
		),
		fuzzScript(
			fuzzReq{op: opReadlink, node: k.symlink},
			fuzzReq{op: opListxattr, node: k.xattrs, payload: xattr(4096, "")[:8]},
			fuzzReq{op: opGetxattr, node: k.xattrs, payload: xattr(100, "user.small")},
			fuzzReq{op: opGetxattr, node: k.xattrs, payload: xattr(0, "trusted.x")},
		),
		fuzzScript(
			fuzzReq{op: abi.OpIomapBegin, node: k.file, payload: abi.Marshal(&begin)},
			fuzzReq{op: abi.OpIomapEnd, node: k.file},
			fuzzReq{op: abi.OpFreezeFS},
		),
		fuzzScript(
			fuzzReq{op: opForget, node: k.file, payload: le.AppendUint64(nil, 1)},
			fuzzReq{op: opBatchForget, payload: forgets},
			fuzzReq{op: opInterrupt, payload: body(&fuse.InterruptIn{Unique: 1})},
		),
		fuzzScript(
			fuzzReq{op: opStatx, node: 1, payload: body(&fuse.StatxIn{SxMask: 0xfff})},
			fuzzReq{op: opAccess, node: k.file, payload: body(&fuse.AccessIn{Mask: 4})},
			fuzzReq{op: opIoctl, node: k.file, payload: body(&fuse.IoctlIn{Cmd: unix.FS_IOC_GETFLAGS, OutSize: 4})},
			fuzzReq{op: opGetattr, node: 2, badLen: true, payload: body(&fuse.GetAttrIn{})},
		),
	}
}
