package fusefs

import (
	"bytes"
	"fmt"
	"log"

	"github.com/hanwen/go-fuse/v2/fuse"

	"safefs/internal/ext4"
	"safefs/internal/fuseloop"
)

// MaxRequest is the largest READ the server asks for: the kernel's
// maximum (256 pages with the default fs.fuse.max_pages_limit). Each
// request costs two context switches, so 1 MiB requests move sequential
// data with an eighth of the round trips of FUSE's 128 KiB default. The
// mount must allow it too (max_read), and the kernel's read-ahead for the
// mount's bdi must be raised for buffered reads to use it.
const MaxRequest = 1 << 20

// MountOptions returns the go-fuse options the server runs with. Options
// that go-fuse would put into a mount string (allow_other, max_read,
// fsname) have no effect on an fd that is already mounted: the mount
// helper sets them.
func (f *FS) MountOptions() *fuse.MountOptions {
	return &fuse.MountOptions{
		MaxWrite:     MaxRequest,
		MaxReadAhead: MaxRequest,
		// go-fuse would try to splice file data into /dev/fuse; with
		// data in Go buffers that only fails and logs for large reads.
		DisableSplice: true,
		// The kernel evaluates POSIX ACLs itself (and with them turns on
		// default_permissions), fetching them through GetXAttr.
		EnableAcl:            true,
		EnableSymlinkCaching: true,
		// Data never changes, so the kernel should not drop cached pages
		// when it sees attributes again (auto_inval_data).
		ExplicitDataCacheControl: true,
		// Passthrough needs CAP_SYS_ADMIN, which the daemon will not have,
		// and serves data from a backing file, which an ext4 image is not.
		DisabledCapabilities: fuse.CAP_PASSTHROUGH,
		// Plain READDIRPLUS, not READDIRPLUS_AUTO: the adaptive mode
		// uses plus only for a directory's first batch unless the
		// caller stats entries while still listing, so find, du and
		// cp -a (which list a directory whole, then stat) fell back to
		// one LOOKUP per entry. Attributes cannot go stale here, so
		// every listing may as well carry them.
		Name:   "ext4",
		Logger: log.New(logWriter(f.logf), "go-fuse: ", 0),
		Debug:  f.debug,
	}
}

// logWriter adapts Logf to the io.Writer a log.Logger writes to.
type logWriter func(format string, args ...any)

func (w logWriter) Write(p []byte) (int, error) {
	w("%s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}

// NewServer answers the kernel's INIT on fuseFD, an open /dev/fuse
// descriptor that is already mounted (or whose mount is created but not
// yet attached), and returns a server ready to Serve. The server owns
// fuseFD from then on, also when NewServer fails. It mounts nothing.
//
// The server reads /dev/fuse with internal/fuseloop, which answers the
// FUSE iomap opcodes (unknown to go-fuse) here and hands every other
// request to go-fuse's protocol code.
//
// fsys should have been opened on a device wrapped by LimitDevice, so that
// parallel requests cannot make parallel device reads without bound.
func NewServer(fuseFD int, fsys *ext4.FS, opts Options) (*fuseloop.Loop, error) {
	if fuseFD <= 0 {
		return nil, fmt.Errorf("fusefs: invalid /dev/fuse descriptor %d", fuseFD)
	}
	fs := New(fsys, opts)
	loop, err := fuseloop.New(fuseFD, fs, fs.MountOptions(), fuseloop.Options{
		Extensions: fs.extensions(),
		InitHook:   fs.initHook,
		Logf:       fs.logf,
	})
	if err != nil {
		return nil, fmt.Errorf("fusefs: starting the FUSE session on descriptor %d: %w", fuseFD, err)
	}
	fs.loop.Store(loop)
	return loop, nil
}

// Serve serves fsys on fuseFD until the filesystem is unmounted (the
// kernel ends the connection), then returns nil with the descriptor
// closed and no goroutine of the server left running.
func Serve(fuseFD int, fsys *ext4.FS, opts Options) error {
	srv, err := NewServer(fuseFD, fsys, opts)
	if err != nil {
		return err
	}
	return srv.Serve()
}
