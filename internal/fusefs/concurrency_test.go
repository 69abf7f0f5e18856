package fusefs_test

import (
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"safefs/internal/fusefs"
	"safefs/internal/testimg"
)

// slowDevice makes every device read hold its OS thread for a while, as a
// pread on a slow disk does (a sleeping goroutine would not hold one),
// and records how many reads ran at once.
type slowDevice struct {
	dev      io.ReaderAt
	inFlight atomic.Int32
	maxSeen  atomic.Int32
	reads    atomic.Int64
}

func (d *slowDevice) ReadAt(p []byte, off int64) (int, error) {
	n := d.inFlight.Add(1)
	defer d.inFlight.Add(-1)
	for {
		m := d.maxSeen.Load()
		if n <= m || d.maxSeen.CompareAndSwap(m, n) {
			break
		}
	}
	d.reads.Add(1)
	ts := unix.NsecToTimespec(int64(500 * time.Microsecond))
	unix.Nanosleep(&ts, nil)
	return d.dev.ReadAt(p, off)
}

// TestConcurrentReaders has 32 goroutines walk and read the whole tree at
// once, each starting in a different directory, over a slow device and a
// tiny metadata cache so that many requests wait for device reads at the
// same time. No reader may see an error, no more device reads than the
// bound may run at once, and the thread count must stay bounded. The
// server runs in this process, so the count includes the 32 readers' own
// threads (each blocked in a system call on the mount holds one).
func TestConcurrentReaders(t *testing.T) {
	const readers = 32
	img := testimg.Build(t, testimg.SpecNamed(t, "ext4-default"))
	slow := &slowDevice{}
	m := mountImage(t, img, mountConfig{
		wrapDevice:      func(d io.ReaderAt) io.ReaderAt { slow.dev = d; return slow },
		blockCacheBytes: 64 << 10,
	})

	top, err := os.ReadDir(m.Dir)
	if err != nil {
		t.Fatal(err)
	}
	threadsBefore := countThreads(t)
	var maxThreads atomic.Int32
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if n := int32(countThreads(t)); n > maxThreads.Load() {
				maxThreads.Store(n)
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()

	var wg sync.WaitGroup
	var files atomic.Int64
	start := time.Now()
	for r := 0; r < readers; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range top {
				dir := filepath.Join(m.Dir, top[(r+i)%len(top)].Name())
				err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
					if err != nil {
						return err
					}
					if _, err := unix.Llistxattr(p, make([]byte, 64<<10)); err != nil {
						return &os.PathError{Op: "listxattr", Path: p, Err: err}
					}
					switch d.Type() {
					case fs.ModeSymlink:
						_, err = os.Readlink(p)
					case 0:
						err = readAll(p)
						files.Add(1)
					}
					return err
				})
				if err != nil {
					t.Errorf("reader %d: %v", r, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-sampled
	elapsed := time.Since(start)
	m.Unmount(t)

	limit := int32(64 + runtime.GOMAXPROCS(0))
	t.Logf("%d readers read %d files in %v; %d device reads, at most %d at once (bound %d); threads: %d before, at most %d during (limit %d)",
		readers, files.Load(), elapsed.Round(time.Millisecond), slow.reads.Load(), slow.maxSeen.Load(),
		fusefs.DefaultDeviceReads(), threadsBefore, maxThreads.Load(), limit)
	if got := slow.maxSeen.Load(); got > int32(fusefs.DefaultDeviceReads()) {
		t.Errorf("%d device reads ran at once, above the bound of %d", got, fusefs.DefaultDeviceReads())
	}
	if maxThreads.Load() >= limit {
		t.Errorf("%d threads, want fewer than %d", maxThreads.Load(), limit)
	}
	if lines := m.logs.Lines(); len(lines) > 0 {
		t.Errorf("the server logged: %q", lines)
	}
}

func countThreads(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Error(err)
	}
	return len(ents)
}
