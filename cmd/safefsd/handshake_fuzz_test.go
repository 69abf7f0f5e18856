package main

import (
	"io"
	"log"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"safefs/internal/fdpass"
	"safefs/internal/fdpass/fdpasstest"
	"safefs/internal/testimg"
)

// fakeServer stands for a FUSE server: it serves nothing and returns.
type fakeServer struct{}

func (fakeServer) Serve() error { return nil }

// FuzzDaemonHandshake plays mount.safe's side of the exchange with the
// fuzzer's packets (an fdpasstest script) against the daemon's own code
// (host.serveConn). The descriptors the packets carry are, in turn, a
// small ext4 image and /dev/null. The sandbox and the FUSE server are
// stand-ins; the filesystem is opened for real. Whatever the packets,
// the daemon must not panic or hang, must confine itself before it reads
// the device, must read only a descriptor mount.safe sent as the
// source, must serve only after sending mount parameters and receiving
// /dev/fuse, and must close every descriptor it received.
func FuzzDaemonHandshake(f *testing.F) {
	img := testimg.Build(f, testimg.Spec{Name: "handshake", MkfsArgs: []string{"-t", "ext4"}, SizeMB: 4, Tree: testimg.TreeSmall})
	hello := fdpass.Hello{Version: fdpass.Version, FSType: "ext4", Source: "/dev/sdz1", Target: "/mnt"}
	msg := fdpasstest.Msg
	f.Add(fdpasstest.Script(msg(&hello, 0), msg(&fdpass.FileReply{ID: 1}, 1), msg(&fdpass.FuseDevice{}, 1), msg(&fdpass.Goodbye{Reason: "mounted"}, 0)))
	f.Add(fdpasstest.Script(msg(&hello, 0), msg(&fdpass.FileReply{ID: 1, Block: true}, 1), msg(&fdpass.Error{Message: "busy"}, 0)))
	f.Add(fdpasstest.Script(msg(&hello, 0), msg(&fdpass.FileReply{ID: 1, Error: "no such file"}, 0)))
	f.Add(fdpasstest.Script(msg(&hello, 0), msg(&fdpass.FileReply{ID: 1}, 2), msg(&fdpass.FuseDevice{}, 0)))
	f.Add(fdpasstest.Script(msg(&fdpass.FuseDevice{}, 1), msg(&hello, 1)))
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		f.Fatal(err)
	}
	image, err := os.Open(img)
	if err != nil {
		f.Fatal(err)
	}
	files := []*os.File{image, devNull}
	log.SetOutput(io.Discard)
	f.Fuzz(func(t *testing.T, script []byte) {
		var mu sync.Mutex
		var confined, devOpened, started bool
		var problems []string
		problem := func(s string) {
			mu.Lock()
			problems = append(problems, s)
			mu.Unlock()
		}
		h := host{
			peerUID: func(*fdpass.Conn) (uint32, error) { return 0, nil },
			confine: func() error {
				confined = true
				return nil
			},
			open: func(src string, dev, direct *os.File, noRecovery bool) (*opened, error) {
				if !confined {
					problem("the device was opened before the daemon was confined")
				}
				devOpened = true
				return openFilesystem(src, dev, direct, noRecovery)
			},
			start: func(fuseFD int, o *opened, block bool, src string, debug bool) (server, error) {
				if !devOpened || o == nil {
					problem("a server was started for no filesystem")
				}
				started = true
				unix.Close(fuseFD)
				return fakeServer{}, nil
			},
		}
		var status int
		before := fdpasstest.Exchange(t, "the daemon's side of the exchange", script, files, func(conn *fdpass.Conn) {
			status = h.serveConn(conn, false)
		})
		for _, p := range problems {
			t.Error(p)
		}
		if status == 0 && !started {
			t.Errorf("the exchange succeeded without a server")
		}
		// The descriptors received are closed when serveConn returns;
		// the one goroutine that may still hold some (after Ready) ends
		// once the connection is closed.
		deadline := time.Now().Add(2 * time.Second)
		for fdpasstest.OpenFDs() > before && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if n := fdpasstest.OpenFDs(); n > before {
			t.Errorf("%d descriptors open after the exchange, %d before: received descriptors leaked", n, before)
		}
	})
}
