package fuseloop

import (
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Test access to the loop's internals, for the external tests (package
// fuseloop_test, which can import fusefs: fusefs imports this package).

// Readers returns how many readers are running.
func Readers(l *Loop) int { return int(l.total.Load()) }

// MaxIdle returns how many readers may wait in read(2) at once.
func MaxIdle(l *Loop) int { return int(l.maxIdle) }

// NewWithWrite is New with every write to the descriptor going through
// hook, which gets the real write function.
func NewWithWrite(fd int, fs fuse.RawFileSystem, mopts *fuse.MountOptions, opts Options,
	hook func(write func([]byte) error, b []byte) error) (*Loop, error) {
	l, err := newLoop(fd, fs, mopts, opts)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	write := l.write
	l.write = func(b []byte) error { return hook(write, b) }
	if err := l.init(); err != nil {
		return nil, err
	}
	return l, nil
}
