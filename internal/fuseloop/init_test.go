package fuseloop_test

import (
	"encoding/binary"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"safefs/internal/fuseloop"
)

// TestConfigDuringInitReply reproduces what an iomap kernel does: it
// processes the INIT reply inside the server's write(2), sends
// FUSE_IOMAP_CONFIG (node 0) from there, and returns from that write
// only once CONFIG has been answered. The test's write hook blocks the
// INIT reply's write the same way; a loop that did not read while
// writing the INIT reply would never answer CONFIG, and the hook gives up
// after a few seconds, failing the test.
func TestConfigDuringInitReply(t *testing.T) {
	k, fd := newFakeKernel(t, 128<<10)
	configOut := make([]byte, 104)
	binary.NativeEndian.PutUint64(configOut, 1<<2) // BLOCKSIZE
	binary.NativeEndian.PutUint32(configOut[8+32+16+4:], 4096)
	var configReq fuseloop.Request
	opts := fuseloop.Options{
		Extensions: map[uint32]fuseloop.Handler{
			opIomapConf: func(req fuseloop.Request) ([]byte, syscall.Errno) {
				configReq = req
				configReq.Payload = append([]byte(nil), req.Payload...)
				return configOut, 0
			},
		},
		InitHook: func(in *fuse.InitIn, out *fuse.InitOut) {
			if in.Flags64()&fuseIomap != 0 {
				out.Flags2 |= uint32(fuseIomap >> 32)
			}
		},
	}
	configAnswered := make(chan struct{})
	var once sync.Once
	initWrite := true
	stuck := false
	hook := func(write func([]byte) error, b []byte) error {
		if initWrite {
			// The first write is the INIT reply: deliver it, then
			// hold on until CONFIG is answered, as the kernel does.
			initWrite = false
			if err := write(b); err != nil {
				return err
			}
			select {
			case <-configAnswered:
			case <-time.After(3 * time.Second):
				stuck = true
			}
			return nil
		}
		err := write(b)
		once.Do(func() { close(configAnswered) })
		return err
	}

	type result struct {
		l   *fuseloop.Loop
		err error
	}
	initDone := make(chan result, 1)
	go func() {
		l, err := fuseloop.NewWithWrite(fd, fuse.NewDefaultRawFileSystem(), quietMountOptions(), opts, hook)
		initDone <- result{l, err}
	}()

	u := k.send(opInit, 0, initIn(true))
	r := k.recv(5 * time.Second)
	if r.Unique != u || r.Status != 0 {
		t.Fatalf("INIT reply %+v", r)
	}
	if out := decode[fuse.InitOut](t, r.Data); out.Flags64()&fuseIomap == 0 {
		t.Errorf("INIT reply flags %#x: the hook did not accept FUSE_IOMAP", out.Flags64())
	}
	select {
	case res := <-initDone:
		t.Fatalf("New returned (%v) before its INIT reply's write did", res.err)
	default:
	}

	in := make([]byte, 64)
	binary.NativeEndian.PutUint64(in[8:], 1<<40) // maxbytes
	uc := k.send(opIomapConf, 0, in)
	r = k.recv(5 * time.Second)
	if r.Unique != uc || r.Status != 0 || len(r.Data) != len(configOut) {
		t.Fatalf("IOMAP_CONFIG reply: unique %d status %d, %d bytes", r.Unique, r.Status, len(r.Data))
	}
	var l *fuseloop.Loop
	select {
	case res := <-initDone:
		if res.err != nil {
			t.Fatalf("New: %v", res.err)
		}
		l = res.l
	case <-time.After(5 * time.Second):
		t.Fatal("New has not returned")
	}
	if stuck {
		t.Fatal("IOMAP_CONFIG was not answered while the INIT reply was being written")
	}
	if configReq.NodeId != 0 || configReq.Unique != uc || len(configReq.Payload) != 64 ||
		binary.NativeEndian.Uint64(configReq.Payload[8:]) != 1<<40 {
		t.Errorf("IOMAP_CONFIG handler saw %+v", configReq)
	}

	s := serve(l)
	k.close()
	if err := s.wait(t, 5*time.Second); err != nil {
		t.Errorf("Serve: %v", err)
	}
}
