package fusefs_test

import (
	"crypto/rand"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"safefs/internal/fusefs"
	"safefs/internal/testimg"
)

const benchFileSize = 64 << 20

// bigImage builds an ext4 image holding one 64 MiB file of random data.
func bigImage(b *testing.B) string {
	b.Helper()
	src := b.TempDir()
	f, err := os.Create(filepath.Join(src, "big"))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, benchFileSize); err != nil {
		b.Fatal(err)
	}
	f.Close()
	img := filepath.Join(b.TempDir(), "big.img")
	if out, err := exec.Command("mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-d", src, img, "128M").CombinedOutput(); err != nil {
		b.Fatalf("mke2fs: %v: %s", err, out)
	}
	return img
}

// readCounter records the READ requests' sizes.
type readCounter struct {
	*fusefs.FS
	reqs, bytes atomic.Int64
}

func (c *readCounter) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	c.reqs.Add(1)
	c.bytes.Add(int64(in.Size))
	return c.FS.Read(cancel, in, buf)
}

// BenchmarkSequentialRead reads a 64 MiB file sequentially with 1 MiB
// read(2) calls through the FUSE mount (server in this process, and the
// safefsd daemon) and through the kernel's ext4 mount of the same image.
// Each round first drops the file's pages from the mount's page cache
// (fadvise DONTNEED), while the image itself stays in the host's page
// cache for both, so the numbers compare the filesystem layers, not the
// disk.
func BenchmarkSequentialRead(b *testing.B) {
	requireFUSE(b)
	testimg.RequireKernelMount(b)
	img := bigImage(b)
	b.Run("fuse", func(b *testing.B) {
		var c *readCounter
		m := mountImage(b, img, mountConfig{wrapFS: func(fs *fusefs.FS) fuse.RawFileSystem {
			c = &readCounter{FS: fs}
			return c
		}})
		benchRead(b, filepath.Join(m.Dir, "big"))
		if n := c.reqs.Load(); n > 0 {
			b.ReportMetric(float64(c.bytes.Load())/float64(n), "B/READ")
		}
		m.Unmount(b)
	})
	b.Run("safefsd", func(b *testing.B) {
		m := mountImage(b, img, mountConfig{daemon: daemonBinary(b)})
		benchRead(b, filepath.Join(m.Dir, "big"))
		m.Unmount(b)
	})
	b.Run("kernel", func(b *testing.B) {
		kernelMount(b, img, func(dir string) { benchRead(b, filepath.Join(dir, "big")) })
	})
}

func benchRead(b *testing.B, path string) {
	b.Helper()
	buf := make([]byte, 1<<20)
	b.SetBytes(benchFileSize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
		b.StartTimer()
		n, err := io.CopyBuffer(io.Discard, onlyReader{f}, buf)
		f.Close()
		if err != nil || n != benchFileSize {
			b.Fatalf("read %d bytes, %v", n, err)
		}
	}
}

// onlyReader hides WriteTo, so that io.CopyBuffer uses read(2) with the
// 1 MiB buffer rather than whatever os.File would choose.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }
