package main

import (
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"safefs/internal/fdpass"
	"safefs/internal/fdpass/fdpasstest"
)

// FuzzHelperHandshake plays the daemon's side of the exchange with the
// fuzzer's packets (an fdpasstest script, its descriptors /dev/null)
// against mount.safe's own code (host.exchange), with stand-ins for
// opening the source and /dev/fuse and for creating, attaching and
// removing the mount. Whatever a compromised daemon sends, mount.safe must
// not panic or hang, must open nothing but the source the user named,
// read-only, must attach only after creating the superblock and handing
// /dev/fuse over, must succeed only with the mount attached, must take
// away a mount it attached but then fails, and must close every
// descriptor it received or opened.
func FuzzHelperHandshake(f *testing.F) {
	msg := fdpasstest.Msg
	req := fdpass.FileRequest{ID: 1, Role: fdpass.RoleSource}
	params := fdpass.MountParams{Subtype: "ext4", ReadOnly: true, MaxRead: 1 << 20, BlockSize: 4096, Warnings: []string{"careful"}}
	f.Add(fdpasstest.Script(msg(&req, 0), msg(&params, 0), msg(&fdpass.Ready{}, 0)))
	f.Add(fdpasstest.Script(msg(&req, 0), msg(&params, 0), msg(&fdpass.Error{Message: "INIT failed"}, 0)))
	f.Add(fdpasstest.Script(msg(&req, 0), msg(&fdpass.Error{Message: "not ext4"}, 0)))
	f.Add(fdpasstest.Script(msg(&fdpass.FileRequest{ID: 7, Role: fdpass.RoleSource, Write: true}, 0)))
	f.Add(fdpasstest.Script(msg(&req, 0), msg(&req, 0), msg(&params, 0), msg(&fdpass.Ready{}, 0)))
	f.Add(fdpasstest.Script(msg(&params, 0), msg(&fdpass.Ready{}, 0)))
	f.Add(fdpasstest.Script(msg(&req, 0), msg(&params, 0), msg(&fdpass.FuseDevice{}, 1), msg(&fdpass.Ready{}, 2)))
	dir := f.TempDir()
	src := filepath.Join(dir, "image")
	if err := os.WriteFile(src, []byte("not really a filesystem"), 0o644); err != nil {
		f.Fatal(err)
	}
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		f.Fatal(err)
	}
	files := []*os.File{devNull}
	opts, err := parseOptions("ro", false)
	if err != nil {
		f.Fatal(err)
	}
	inv := &invocation{source: src, target: filepath.Join(dir, "mnt"), fstype: "ext4", opts: opts}
	quiet := func(string, ...any) {}
	f.Fuzz(func(t *testing.T, script []byte) {
		var mu sync.Mutex
		var events []string
		event := func(e string) {
			mu.Lock()
			events = append(events, e)
			mu.Unlock()
		}
		fsfd := -1
		h := host{
			openSource: func(path string) (*os.File, bool, error) {
				if path != src {
					t.Errorf("mount.safe opened %q, not the source %q", path, src)
				}
				event("source")
				f, err := os.Open(src)
				return f, false, err
			},
			openFuse: func() (*os.File, error) {
				event("fuse")
				return os.Open(os.DevNull)
			},
			create: func(string, *os.File, bool, *fdpass.MountParams, func(string, ...any)) (int, error) {
				event("create")
				fd, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
				fsfd = fd
				return fd, err
			},
			attach: func(fd int, target string, attrs int) error {
				if fd != fsfd || target != inv.target {
					t.Errorf("attached descriptor %d at %s, want %d at %s", fd, target, fsfd, inv.target)
				}
				event("attach")
				return nil
			},
			mounted: func(string, *fdpass.MountParams, func(string, ...any)) {},
			unmount: func(string) { event("unmount") },
			closeFD: func(fd int) {
				if fd == fsfd {
					event("close")
				}
				unix.Close(fd)
			},
		}
		var xerr error
		before := fdpasstest.Exchange(t, "mount.safe's side of the exchange", script, files, func(conn *fdpass.Conn) {
			xerr = h.exchange(conn, inv, quiet, quiet)
		})
		has := func(e string) bool { return slices.Contains(events, e) }
		attached := has("attach")
		switch {
		case attached && !(has("source") && has("fuse") && has("create")):
			t.Errorf("attached without the source, /dev/fuse and the superblock: %q", events)
		case xerr == nil && !attached:
			t.Errorf("succeeded without attaching: %q", events)
		case xerr != nil && attached && !has("unmount"):
			t.Errorf("failed (%v) with the mount attached and left: %q", xerr, events)
		case has("create") && !has("close"):
			t.Errorf("the superblock's descriptor was not closed: %q", events)
		}
		if n := fdpasstest.OpenFDs(); n > before {
			t.Errorf("%d descriptors open after the exchange, %d before: descriptors leaked (%q)", n, before, events)
		}
	})
}
