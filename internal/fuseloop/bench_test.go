package fuseloop_test

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	benchBigSize  = 256 << 20
	benchDirs     = 50
	benchDirFiles = 100
)

var (
	benchOnce sync.Once
	benchImg  string
	benchErr  error
)

// benchImage builds, once, an ext4 image with a 256 MiB file of random
// data and 5,000 small files in 50 directories. With
// FUSELOOP_BENCH_IMAGE=PATH it is built at PATH and kept, or reused if
// PATH exists, so that repeated runs (e.g. alternating the servers'
// order on a noisy machine) do not rebuild it.
func benchImage(b *testing.B) string {
	b.Helper()
	if _, err := exec.LookPath("mke2fs"); err != nil {
		b.Skip("mke2fs not found")
	}
	benchOnce.Do(func() {
		keep := os.Getenv("FUSELOOP_BENCH_IMAGE")
		if keep != "" {
			if _, err := os.Stat(keep); err == nil {
				benchImg = keep
				return
			}
		}
		dir, err := os.MkdirTemp("", "fuseloop-bench-")
		if err != nil {
			benchErr = err
			return
		}
		benchCleanup = func() { os.RemoveAll(dir) }
		src := filepath.Join(dir, "src")
		if benchErr = os.MkdirAll(src, 0o755); benchErr != nil {
			return
		}
		f, err := os.Create(filepath.Join(src, "big"))
		if err != nil {
			benchErr = err
			return
		}
		rng := rand.NewChaCha8([32]byte{1})
		if _, benchErr = io.CopyN(f, rng, benchBigSize); benchErr != nil {
			f.Close()
			return
		}
		f.Close()
		for d := range benchDirs {
			sub := filepath.Join(src, "small", fmt.Sprint(d))
			if benchErr = os.MkdirAll(sub, 0o755); benchErr != nil {
				return
			}
			for i := range benchDirFiles {
				if benchErr = os.WriteFile(filepath.Join(sub, fmt.Sprint(i)), []byte{byte(i)}, 0o644); benchErr != nil {
					return
				}
			}
		}
		img := filepath.Join(dir, "bench.img")
		out, err := exec.Command("mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-d", src, img, "400M").CombinedOutput()
		if err != nil {
			benchErr = fmt.Errorf("mke2fs: %v: %s", err, out)
			return
		}
		os.RemoveAll(src)
		if keep != "" {
			if benchErr = os.Rename(img, keep); benchErr != nil {
				return
			}
			img = keep
		}
		// Write the image back and read it into the page cache now, so
		// that neither server's runs pay for writeback or disk reads.
		unix.Sync()
		if f, err := os.Open(img); err == nil {
			io.Copy(io.Discard, f)
			f.Close()
		}
		benchImg = img
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return benchImg
}

// benchCleanup removes the benchmark image; TestMain calls it.
var benchCleanup = func() {}

// BenchmarkServers serves the same fusefs.FS over the same image with
// go-fuse's fuse.Server and with a Loop, both in this process, and
// measures through the mounts:
//
//   - seqread: a 256 MiB file read with 1 MiB read(2) calls, its pages
//     dropped from the mount's page cache before each pass (the image
//     stays in the host's page cache: this compares the servers, not the
//     disk);
//   - stat: lstat of 5,000 files in 50 directories after dropping the
//     kernel's dentries and inodes (drop_caches=2), so that each is a
//     LOOKUP;
//   - randread: 4 KiB O_DIRECT reads at random offsets, each one READ;
//   - randread8: the same from 8 goroutines at once.
func BenchmarkServers(b *testing.B) {
	requireFUSE(b)
	img := benchImage(b)
	servers := []server{goFuseServer, loopServer}
	mounts := map[server]*mount{}
	for _, s := range servers {
		mounts[s] = mountImage(b, img, s)
	}
	cases := []struct {
		name string
		fn   func(b *testing.B, dir string)
	}{
		{"seqread", benchSeqRead},
		{"stat", benchStat},
		{"randread", func(b *testing.B, dir string) { benchRandRead(b, dir, 1) }},
		{"randread8", func(b *testing.B, dir string) { benchRandRead(b, dir, 8) }},
	}
	for _, c := range cases {
		for _, s := range servers {
			b.Run(c.name+"/"+s.String(), func(b *testing.B) { c.fn(b, mounts[s].Dir) })
		}
	}
	for _, s := range servers {
		if lines := mounts[s].logs.Lines(); len(lines) > 0 {
			b.Errorf("%v logged: %q", s, lines)
		}
	}
}

// cpuTime is the CPU time this process (client and server) has used.
// On a shared machine it varies less than the elapsed time, which
// includes waiting for CPUs other tenants hold.
func cpuTime() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchSeqRead(b *testing.B, dir string) {
	buf := make([]byte, 1<<20)
	b.SetBytes(benchBigSize)
	var cpu time.Duration
	defer func() { b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op") }()
	for b.Loop() {
		b.StopTimer()
		f, err := os.Open(filepath.Join(dir, "big"))
		if err != nil {
			b.Fatal(err)
		}
		unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
		b.StartTimer()
		start := cpuTime()
		var total int64
		for {
			n, err := f.Read(buf)
			total += int64(n)
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		cpu += cpuTime() - start
		f.Close()
		if total != benchBigSize {
			b.Fatalf("read %d bytes", total)
		}
	}
}

func benchStat(b *testing.B, dir string) {
	paths := make([]string, 0, benchDirs*benchDirFiles)
	for d := range benchDirs {
		for i := range benchDirFiles {
			paths = append(paths, filepath.Join(dir, "small", fmt.Sprint(d), fmt.Sprint(i)))
		}
	}
	var st unix.Stat_t
	var cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := cpuTime()
		for _, p := range paths {
			if err := unix.Lstat(p, &st); err != nil {
				b.Fatal(err)
			}
		}
		cpu += cpuTime() - start
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(paths)), "ns/stat")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*len(paths)), "cpu-ns/stat")
}

func benchRandRead(b *testing.B, dir string, parallel int) {
	fd, err := unix.Open(filepath.Join(dir, "big"), unix.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fd)
	const size = 4096
	b.SetBytes(size)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	b.ResetTimer()
	start := cpuTime()
	defer func() { b.ReportMetric(float64((cpuTime()-start).Nanoseconds())/float64(b.N), "cpu-ns/op") }()
	for w := range parallel {
		n := b.N / parallel
		if w < b.N%parallel {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			buf := alignedBuffer(size)
			for range n {
				off := int64(rng.IntN(benchBigSize/size)) * size
				if _, err := unix.Pread(fd, buf, off); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
}

// BenchmarkPaired measures the same workloads as BenchmarkServers, but
// alternates the two servers unit by unit inside each iteration (one
// pass, one cold stat of all files, one batch of reads on each, the
// order swapped every iteration), so that both see the same load from
// other tenants of a shared machine, and reports each server's time per
// unit and the ratio loop/gofuse (below 1: the loop is faster).
func BenchmarkPaired(b *testing.B) {
	requireFUSE(b)
	img := benchImage(b)
	mounts := map[server]*mount{}
	for _, s := range []server{goFuseServer, loopServer} {
		mounts[s] = mountImage(b, img, s)
	}
	var paths [2][]string
	for s := range paths {
		for d := range benchDirs {
			for i := range benchDirFiles {
				paths[s] = append(paths[s], filepath.Join(mounts[server(s)].Dir, "small", fmt.Sprint(d), fmt.Sprint(i)))
			}
		}
	}
	cases := []struct {
		name string
		unit string
		prep func() // before both servers' units, untimed
		run  func(b *testing.B, s server)
	}{
		{"seqread", "ms/pass", nil, func(b *testing.B, s server) { seqPass(b, mounts[s].Dir) }},
		{"stat", "µs/5000stat", dropDentries(b), func(b *testing.B, s server) {
			var st unix.Stat_t
			for _, p := range paths[s] {
				if err := unix.Lstat(p, &st); err != nil {
					b.Fatal(err)
				}
			}
		}},
		{"randread", "µs/500reads", nil, func(b *testing.B, s server) { randBatch(b, mounts[s].Dir, 1, 500) }},
		{"randread8", "µs/8x250reads", nil, func(b *testing.B, s server) { randBatch(b, mounts[s].Dir, 8, 250) }},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var total [2]time.Duration
			i := 0
			for b.Loop() {
				if c.prep != nil {
					b.StopTimer()
					c.prep()
					b.StartTimer()
				}
				order := []server{goFuseServer, loopServer}
				if i%2 == 1 {
					order = []server{loopServer, goFuseServer}
				}
				i++
				for _, s := range order {
					start := time.Now()
					c.run(b, s)
					total[s] += time.Since(start)
				}
			}
			scale := float64(time.Microsecond)
			if c.unit == "ms/pass" {
				scale = float64(time.Millisecond)
			}
			b.ReportMetric(float64(total[goFuseServer])/scale/float64(b.N), "gofuse-"+c.unit)
			b.ReportMetric(float64(total[loopServer])/scale/float64(b.N), "loop-"+c.unit)
			b.ReportMetric(float64(total[loopServer])/float64(total[goFuseServer]), "loop/gofuse")
		})
	}
}

// dropDentries returns a function that drops the kernel's dentries and
// inodes (all mounts'), so that the next stat of each file is a LOOKUP.
func dropDentries(b *testing.B) func() {
	return func() {
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0); err != nil {
			b.Fatal(err)
		}
	}
}

// seqPass reads the big file once with 1 MiB reads after dropping its
// pages from the mount's page cache.
func seqPass(b *testing.B, dir string) {
	f, err := os.Open(filepath.Join(dir, "big"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	buf := make([]byte, 1<<20)
	var total int64
	for {
		n, err := f.Read(buf)
		total += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	if total != benchBigSize {
		b.Fatalf("read %d bytes", total)
	}
}

// randBatch makes n 4 KiB O_DIRECT reads at random offsets from each of
// parallel goroutines.
func randBatch(b *testing.B, dir string, parallel, n int) {
	fd, err := unix.Open(filepath.Join(dir, "big"), unix.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fd)
	var wg sync.WaitGroup
	errs := make(chan error, parallel)
	for w := range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			buf := alignedBuffer(4096)
			for range n {
				if _, err := unix.Pread(fd, buf, int64(rng.IntN(benchBigSize/4096))*4096); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
}
