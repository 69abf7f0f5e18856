package fuseloop_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"log"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"safefs/internal/ext4"
	"safefs/internal/fusefs"
	"safefs/internal/testimg"

	"safefs/internal/fuseloop"
)

// testImage is a small ext4 image and the files in it.
type testImage struct {
	path  string
	files map[string][]byte
}

var (
	imageOnce sync.Once
	image     testImage
	imageErr  error
	imageDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if imageDir != "" {
		os.RemoveAll(imageDir)
	}
	testimg.Cleanup()
	benchCleanup()
	os.Exit(code)
}

// smallImage builds, once, an ext4 image with a large file (a READ of
// MaxWrite bytes and a short one at the end), a small one and a
// directory, with mke2fs -d; it needs no root.
func smallImage(t testing.TB) testImage {
	t.Helper()
	if _, err := exec.LookPath("mke2fs"); err != nil {
		t.Skip("mke2fs not found")
	}
	imageOnce.Do(func() {
		imageDir, imageErr = os.MkdirTemp("", "fuseloop-test-")
		if imageErr != nil {
			return
		}
		src := filepath.Join(imageDir, "src")
		big := make([]byte, 3<<20+1234)
		rand.New(rand.NewSource(1)).Read(big)
		files := map[string][]byte{
			"big":   big,
			"small": []byte("hello\n"),
			"dir/a": []byte("a"),
			"dir/b": []byte("bb"),
		}
		for name, data := range files {
			p := filepath.Join(src, name)
			if imageErr = os.MkdirAll(filepath.Dir(p), 0o755); imageErr != nil {
				return
			}
			if imageErr = os.WriteFile(p, data, 0o644); imageErr != nil {
				return
			}
		}
		img := filepath.Join(imageDir, "small.img")
		out, err := exec.Command("mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-d", src, img, "16M").CombinedOutput()
		if err != nil {
			imageErr = errors.New("mke2fs: " + err.Error() + ": " + string(out))
			return
		}
		image = testImage{path: img, files: files}
	})
	if imageErr != nil {
		t.Fatal(imageErr)
	}
	return image
}

// openFusefs serves img with fusefs, as safefsd does.
func openFusefs(t testing.TB, img string, logf func(string, ...any)) *fusefs.FS {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fsys, err := ext4.Open(fusefs.LimitDevice(f, 0), nil)
	if err != nil {
		t.Fatal(err)
	}
	return fusefs.New(fsys, fusefs.Options{Logf: logf})
}

// startLoop runs New against the fake kernel, which sends INIT, and
// returns the loop and go-fuse's INIT reply.
func startLoop(t testing.TB, k *fakeKernel, fd int, fs fuse.RawFileSystem, mopts *fuse.MountOptions, opts fuseloop.Options, iomap bool) (*fuseloop.Loop, *fuse.InitOut) {
	t.Helper()
	type result struct {
		l   *fuseloop.Loop
		err error
	}
	done := make(chan result, 1)
	go func() {
		l, err := fuseloop.New(fd, fs, mopts, opts)
		done <- result{l, err}
	}()
	u := k.send(opInit, 0, initIn(iomap))
	r := k.recv(5 * time.Second)
	if r.Unique != u || r.Status != 0 {
		t.Fatalf("INIT reply: unique %d status %d, want %d, 0", r.Unique, r.Status, u)
	}
	res := <-done
	if res.err != nil {
		t.Fatalf("New: %v", res.err)
	}
	return res.l, decode[fuse.InitOut](t, r.Data)
}

// dirent is one entry of a READDIR reply.
type dirent struct {
	ino  uint64
	name string
}

func parseDirents(t testing.TB, b []byte) []dirent {
	t.Helper()
	var out []dirent
	ne := binary.NativeEndian
	for len(b) > 0 {
		if len(b) < 24 {
			t.Fatalf("READDIR: %d trailing bytes", len(b))
		}
		n := int(ne.Uint32(b[16:]))
		size := (24 + n + 7) &^ 7
		if size > len(b) {
			t.Fatalf("READDIR: entry of %d bytes in %d", size, len(b))
		}
		out = append(out, dirent{ino: ne.Uint64(b), name: string(b[24 : 24+n])})
		b = b[size:]
	}
	return out
}

// TestProtocol serves a real fusefs.FS over an image to the fake kernel:
// INIT from a newer kernel, then LOOKUP, GETATTR, OPEN, READ (a full
// MaxWrite reply and a short one), READDIR, an extension, FORGET and
// BATCH_FORGET (no reply), unknown opcodes (ENOSYS from go-fuse), a
// notification, DESTROY, malformed requests, and the end of the
// connection.
func TestProtocol(t *testing.T) {
	img := smallImage(t)
	baseline := runtime.NumGoroutine()
	const maxWrite = 1 << 20
	k, fd := newFakeKernel(t, maxWrite)

	var logs, fuseLogs logSink
	fs := openFusefs(t, img.path, logs.logf)
	mopts := fs.MountOptions()
	mopts.MaxWrite = maxWrite
	mopts.Logger = log.New(&fuseLogs, "", 0)
	mopts.ExtraCapabilities |= fuseIomap

	var hookIn fuse.InitIn
	var extCalls []fuseloop.Request
	var extMu sync.Mutex
	opts := fuseloop.Options{
		Logf: logs.logf,
		InitHook: func(in *fuse.InitIn, out *fuse.InitOut) {
			hookIn = *in
			out.MaxStackDepth = 7 // visible in the reply
		},
		Extensions: map[uint32]fuseloop.Handler{
			opIomapBegin: func(req fuseloop.Request) ([]byte, syscall.Errno) {
				extMu.Lock()
				c := req
				c.Payload = bytes.Clone(req.Payload)
				extCalls = append(extCalls, c)
				extMu.Unlock()
				if string(req.Payload) == "fail" {
					return []byte("ignored"), syscall.ENOSPC
				}
				return append([]byte("mapped:"), req.Payload...), 0
			},
		},
	}
	l, out := startLoop(t, k, fd, fs, mopts, opts, true)
	s := serve(l)

	// INIT: go-fuse's own minor (not the kernel's 99), iomap echoed
	// because ExtraCapabilities asks for it and the kernel offered it,
	// and the hook's change.
	if out.Major != 7 || out.Minor != 28 {
		t.Errorf("INIT reply version %d.%d, want 7.28", out.Major, out.Minor)
	}
	if out.Flags64()&fuseIomap == 0 {
		t.Errorf("INIT reply flags %#x: FUSE_IOMAP not accepted", out.Flags64())
	}
	if out.MaxWrite != maxWrite || out.MaxPages != maxWrite/pageSize {
		t.Errorf("INIT reply max_write %d max_pages %d, want %d, %d", out.MaxWrite, out.MaxPages, maxWrite, maxWrite/pageSize)
	}
	if out.MaxStackDepth != 7 {
		t.Errorf("INIT reply max_stack_depth %d: the hook's change was not sent", out.MaxStackDepth)
	}
	if hookIn.Major != 7 || hookIn.Minor != 99 || hookIn.Flags64()&fuseIomap == 0 {
		t.Errorf("InitHook saw %d.%d flags %#x", hookIn.Major, hookIn.Minor, hookIn.Flags64())
	}

	// LOOKUP and GETATTR.
	entry := decode[fuse.EntryOut](t, k.ok(opLookup, 1, []byte("big\x00")))
	big := img.files["big"]
	if entry.Attr.Size != uint64(len(big)) || entry.NodeId < 11 {
		t.Errorf("LOOKUP big: node %d size %d, want size %d", entry.NodeId, entry.Attr.Size, len(big))
	}
	// fusefs answers a missing name with a negative entry (node 0).
	if neg := decode[fuse.EntryOut](t, k.ok(opLookup, 1, []byte("nonexistent\x00"))); neg.NodeId != 0 {
		t.Errorf("LOOKUP nonexistent: node %d, want a negative entry", neg.NodeId)
	}
	attr := decode[fuse.AttrOut](t, k.ok(opGetattr, entry.NodeId, structBody(&fuse.GetAttrIn{})))
	if attr.Size != uint64(len(big)) || attr.Ino != entry.NodeId || attr.Mode&syscall.S_IFMT != syscall.S_IFREG {
		t.Errorf("GETATTR big: %+v", attr.Attr)
	}

	// READ: a whole MaxWrite, the middle, and the short end.
	// OPEN and OPENDIR: fusefs needs neither (ENOSYS, after which the
	// kernel opens by itself and sends handle 0).
	for _, op := range []uint32{opOpen, opOpendir} {
		if r := k.call(op, entry.NodeId, structBody(&fuse.OpenIn{Flags: syscall.O_RDONLY})); r.Status != -int32(syscall.ENOSYS) {
			t.Errorf("opcode %d: status %d, want ENOSYS", op, r.Status)
		}
	}
	var open, dir fuse.OpenOut
	for _, c := range []struct{ off, size int }{
		{0, maxWrite},
		{2<<20 + 5, maxWrite},
		{3 << 20, maxWrite},
		{len(big), 4096},
	} {
		data := k.ok(opRead, entry.NodeId, structBody(&fuse.ReadIn{Fh: open.Fh, Offset: uint64(c.off), Size: uint32(c.size)}))
		want := big[c.off:min(c.off+c.size, len(big))]
		if !bytes.Equal(data, want) {
			t.Errorf("READ %d bytes at %d: got %d bytes, want %d (equal prefix: %v)", c.size, c.off, len(data), len(want),
				bytes.HasPrefix(want, data[:min(len(data), 64)]))
		}
	}

	// READDIR of the root.
	ents := parseDirents(t, k.ok(opReaddir, 1, structBody(&fuse.ReadIn{Fh: dir.Fh, Size: 4096})))
	var names []string
	for _, e := range ents {
		names = append(names, e.name)
		if e.name == "big" && e.ino != entry.NodeId {
			t.Errorf("READDIR: big has inode %d, LOOKUP said %d", e.ino, entry.NodeId)
		}
	}
	slices.Sort(names)
	if want := []string{".", "..", "big", "dir", "lost+found", "small"}; !slices.Equal(names, want) {
		t.Errorf("READDIR /: %q, want %q", names, want)
	}

	// The extension: the handler sees the header and the payload, and
	// its reply (or error) goes back under the request's unique ID.
	if got := k.ok(opIomapBegin, 0, []byte("xyz")); string(got) != "mapped:xyz" {
		t.Errorf("extension reply %q, want %q", got, "mapped:xyz")
	}
	if r := k.call(opIomapBegin, entry.NodeId, []byte("fail")); r.Status != -int32(syscall.ENOSPC) || len(r.Data) != 0 {
		t.Errorf("extension error: status %d data %q, want -ENOSPC and nothing", r.Status, r.Data)
	}
	extMu.Lock()
	if len(extCalls) != 2 || extCalls[0].NodeId != 0 || extCalls[1].NodeId != entry.NodeId ||
		extCalls[0].Opcode != opIomapBegin || extCalls[0].Uid != 1000 || extCalls[0].Pid != 4242 ||
		int(extCalls[0].Length) != inHeaderSize+3 {
		t.Errorf("extension calls: %+v", extCalls)
	}
	extMu.Unlock()

	// FORGET and BATCH_FORGET get no reply: the next message is the
	// reply to the GETATTR sent after them.
	k.send(opForget, entry.NodeId, structBody(&fuse.ForgetIn{Nlookup: 1}))
	batch := make([]byte, 8+16*2)
	binary.NativeEndian.PutUint32(batch, 2)
	binary.NativeEndian.PutUint64(batch[8:], entry.NodeId)
	binary.NativeEndian.PutUint64(batch[16:], 1)
	binary.NativeEndian.PutUint64(batch[24:], 12)
	binary.NativeEndian.PutUint64(batch[32:], 1)
	k.send(opBatchForget, 0, batch)
	k.ok(opGetattr, 1, structBody(&fuse.GetAttrIn{}))

	// Unknown opcodes, and an iomap opcode nobody registered: ENOSYS
	// from go-fuse.
	for _, op := range []uint32{4000, opIomapEnd, 99} {
		if r := k.call(op, 1, []byte("12345678")); r.Status != -int32(syscall.ENOSYS) {
			t.Errorf("opcode %d: status %d, want -ENOSYS", op, r.Status)
		}
	}
	if !fuseLogs.contains("Unimplemented opcode") {
		t.Errorf("go-fuse did not log the unknown opcodes: %q", fuseLogs.Lines())
	}

	// Malformed requests: too short for a header (dropped: there is no
	// unique ID to answer), a header claiming more bytes than were sent
	// and a READ asking for 2 GiB (both answered EIO), a GETATTR with
	// no body (go-fuse answers EIO). The loop keeps serving.
	k.raw([]byte("short"))
	lying := request(opGetattr, 1001, 1, structBody(&fuse.GetAttrIn{}))
	binary.NativeEndian.PutUint32(lying, 4096)
	k.raw(lying)
	if r := k.recv(5 * time.Second); r.Unique != 1001 || r.Status != -int32(syscall.EIO) {
		t.Errorf("lying header: reply %+v, want EIO to 1001", r)
	}
	if r := k.call(opRead, entry.NodeId, structBody(&fuse.ReadIn{Fh: open.Fh, Size: 1 << 31})); r.Status != -int32(syscall.EIO) {
		t.Errorf("READ of 2 GiB: status %d, want -EIO", r.Status)
	}
	if r := k.call(opGetattr, 1, nil); r.Status != -int32(syscall.EIO) {
		t.Errorf("GETATTR without a body: status %d, want -EIO", r.Status)
	}
	if r := k.call(opLookup, 1, []byte("small\x00")); r.Status != 0 {
		t.Errorf("LOOKUP after the malformed requests: status %d", r.Status)
	}
	for _, want := range []string{"shorter than a header", "header says 4096 bytes", "asks for a reply of"} {
		// The short request gets no reply to wait for, and another
		// reader may have answered everything since.
		if !logs.waitFor(want, 5*time.Second) {
			t.Errorf("no log line about %q: %q", want, logs.Lines())
		}
	}

	// A notification: unique 0, the code in the error field.
	if err := l.Notify(100, []byte("upsert")); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	if r := k.recv(5 * time.Second); r.Unique != 0 || r.Status != 100 || string(r.Data) != "upsert" {
		t.Errorf("notification: %+v", r)
	}

	// DESTROY is answered (the kernel waits for it on fuseblk), then the
	// connection ends.
	if r := k.call(opDestroy, 0, nil); r.Status != 0 {
		t.Errorf("DESTROY: status %d", r.Status)
	}
	k.close()
	if err := s.wait(t, 5*time.Second); err != nil {
		t.Errorf("Serve: %v", err)
	}
	if n := fuseloop.Readers(l); n != 0 {
		t.Errorf("%d readers left after Serve", n)
	}
	goroutinesSettle(t, baseline)
	if err := l.Notify(100, nil); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Notify after the end: %v, want os.ErrClosed", err)
	}
	// The descriptor is closed.
	if _, err := syscall.Write(fd, []byte("x")); err != syscall.EBADF {
		t.Errorf("write to the loop's descriptor after Serve: %v, want EBADF", err)
	}
	for _, l := range logs.Lines() {
		if !strings.Contains(l, "shorter than a header") && !strings.Contains(l, "header says") &&
			!strings.Contains(l, "asks for a reply") {
			t.Errorf("unexpected log line: %s", l)
		}
	}
}

// TestInitNoIomap: FUSE_IOMAP is accepted only when the kernel offers it.
func TestInitNoIomap(t *testing.T) {
	k, fd := newFakeKernel(t, 128<<10)
	mopts := &fuse.MountOptions{ExtraCapabilities: fuseIomap, Logger: log.New(&logSink{}, "", 0)}
	l, out := startLoop(t, k, fd, fuse.NewDefaultRawFileSystem(), mopts, fuseloop.Options{}, false)
	if out.Flags64()&fuseIomap != 0 {
		t.Errorf("INIT reply flags %#x: FUSE_IOMAP accepted but not offered", out.Flags64())
	}
	s := serve(l)
	k.close()
	if err := s.wait(t, 5*time.Second); err != nil {
		t.Errorf("Serve: %v", err)
	}
}

// TestInitRefused: go-fuse refuses a kernel with another major version;
// New reports it, answers the kernel, and closes the descriptor without
// leaving a goroutine.
func TestInitRefused(t *testing.T) {
	baseline := runtime.NumGoroutine()
	k, fd := newFakeKernel(t, 128<<10)
	done := make(chan error, 1)
	go func() {
		_, err := fuseloop.New(fd, fuse.NewDefaultRawFileSystem(), &fuse.MountOptions{Logger: log.New(&logSink{}, "", 0)}, fuseloop.Options{})
		done <- err
	}()
	in := fuse.InitIn{Major: 8, Minor: 1}
	u := k.send(opInit, 0, structBody(&in))
	if r := k.recv(5 * time.Second); r.Unique != u || r.Status != -int32(syscall.EIO) {
		t.Errorf("INIT of FUSE 8.1: reply %+v, want EIO", r)
	}
	if err := <-done; err == nil || !strings.Contains(err.Error(), "INIT refused") {
		t.Errorf("New: %v, want an INIT refused error", err)
	}
	if _, err := syscall.Write(fd, []byte("x")); err != syscall.EBADF {
		t.Errorf("write to the descriptor after New failed: %v, want EBADF", err)
	}
	goroutinesSettle(t, baseline)
}

// TestFirstRequestNotInit: anything but INIT first fails New.
func TestFirstRequestNotInit(t *testing.T) {
	k, fd := newFakeKernel(t, 128<<10)
	done := make(chan error, 1)
	go func() {
		_, err := fuseloop.New(fd, fuse.NewDefaultRawFileSystem(), nil, fuseloop.Options{Logf: (&logSink{}).logf})
		done <- err
	}()
	u := k.send(opGetattr, 1, structBody(&fuse.GetAttrIn{}))
	if r := k.recv(5 * time.Second); r.Unique != u || r.Status != -int32(syscall.EIO) {
		t.Errorf("GETATTR before INIT: reply %+v, want EIO", r)
	}
	if err := <-done; err == nil {
		t.Error("New succeeded without INIT")
	}
}

// TestNewArguments: what New refuses before any I/O.
func TestNewArguments(t *testing.T) {
	fs := fuse.NewDefaultRawFileSystem()
	for name, c := range map[string]struct {
		fd   int
		fs   fuse.RawFileSystem
		opts fuseloop.Options
	}{
		"bad fd":              {-1, fs, fuseloop.Options{}},
		"no filesystem":       {100000, nil, fuseloop.Options{}},
		"INIT extension":      {100000, fs, fuseloop.Options{Extensions: map[uint32]fuseloop.Handler{opInit: func(fuseloop.Request) ([]byte, syscall.Errno) { return nil, 0 }}}},
		"INTERRUPT extension": {100000, fs, fuseloop.Options{Extensions: map[uint32]fuseloop.Handler{opInterrupt: func(fuseloop.Request) ([]byte, syscall.Errno) { return nil, 0 }}}},
	} {
		if _, err := fuseloop.New(c.fd, c.fs, nil, c.opts); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
}

// TestGarbage feeds the loop, serving fusefs, thousands of requests with
// a correct length but random opcodes (known, unknown and extension ones),
// node IDs and bodies: nothing may crash it or stop it from answering a
// well-formed request afterwards.
func TestGarbage(t *testing.T) {
	img := smallImage(t)
	k, fd := newFakeKernel(t, 128<<10)
	var logs, fuseLogs logSink
	fs := openFusefs(t, img.path, logs.logf)
	mopts := fs.MountOptions()
	mopts.MaxWrite = 128 << 10
	mopts.Logger = log.New(&fuseLogs, "", 0)
	log.SetOutput(&fuseLogs) // go-fuse also uses the standard logger
	defer log.SetOutput(os.Stderr)
	opts := fuseloop.Options{Logf: logs.logf, Extensions: map[uint32]fuseloop.Handler{
		opIomapBegin: func(req fuseloop.Request) ([]byte, syscall.Errno) { return req.Payload, 0 },
	}}
	l, _ := startLoop(t, k, fd, fs, mopts, opts, false)
	s := serve(l)

	// Drain replies while sending, or the loop would block writing.
	// Replies come in any order: the GETATTR's may overtake others.
	drained := make(chan int)
	go func() {
		n := 0
		for {
			r, ok := k.tryRecv(10 * time.Second)
			if !ok {
				break
			}
			if r.Unique == 1<<40 {
				break // the final GETATTR's reply
			}
			n++
		}
		drained <- n
		for {
			// Anything still coming, so that closing the socket
			// does not discard unread replies (which a socket, unlike
			// /dev/fuse, reports to the loop as ECONNRESET).
			if _, ok := k.tryRecv(300 * time.Millisecond); !ok {
				break
			}
		}
		close(drained)
	}()
	rng := rand.New(rand.NewSource(2))
	for range 5000 {
		op := uint32(rng.Intn(56))
		switch rng.Intn(10) {
		case 0:
			op = opIomapBegin
		case 1:
			op = uint32(rng.Intn(1 << 16))
		case 2:
			op = opInit // go-fuse's INIT again: harmless
		}
		if op == opDestroy {
			continue
		}
		body := make([]byte, rng.Intn(200))
		rng.Read(body)
		// Plausible sizes sometimes, so that more requests get past
		// go-fuse's checks.
		if len(body) >= 24 && rng.Intn(2) == 0 {
			binary.NativeEndian.PutUint32(body[16:], uint32(rng.Intn(1<<17)))
		}
		node := uint64(rng.Intn(20))
		if rng.Intn(5) == 0 {
			node = rng.Uint64()
		}
		k.raw(request(op, uint64(rng.Intn(1<<30))*2, node, body))
	}
	k.raw(request(opGetattr, 1<<40, 1, structBody(&fuse.GetAttrIn{})))
	select {
	case n := <-drained:
		t.Logf("%d replies to 5000 garbage requests", n)
	case <-time.After(20 * time.Second):
		t.Fatal("no reply to a GETATTR after the garbage")
	}
	<-drained
	for _, line := range logs.Lines() {
		if strings.Contains(line, "panicked") {
			t.Errorf("log: %s", line)
		}
	}
	k.close()
	if err := s.wait(t, 5*time.Second); err != nil {
		t.Errorf("Serve: %v", err)
	}
}
