package journal

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"safefs/internal/ext4"
	"safefs/internal/testimg"
)

// fuzzBase is the filesystem the fuzz target mutates the journal of: 4 MiB
// of ext4 with 1 KiB blocks and a 1024-block journal, left needing recovery
// by debugfs, and journal regions debugfs wrote in several formats as
// seeds.
var fuzzBase struct {
	once    sync.Once
	img     []byte
	jOff    int64 // byte offset of journal block 0
	seeds   [][]byte
	skipWhy string
}

// fuzzRegion is how much of the journal, from its superblock on, a fuzz
// input replaces: the seeds' transactions all fit, and inputs stay small
// enough for the fuzzer to minimize.
const fuzzRegion = 16 << 10

func loadFuzzBase(t testing.TB) {
	fuzzBase.once.Do(func() {
		if _, err := testimg.FindTool("debugfs"); err != nil {
			fuzzBase.skipWhy = err.Error()
			return
		}
		dir, err := os.MkdirTemp("", "journal-fuzz-")
		if err != nil {
			fuzzBase.skipWhy = err.Error()
			return
		}
		defer os.RemoveAll(dir)
		conf := filepath.Join(dir, "mke2fs.conf")
		os.WriteFile(conf, []byte(testimg.MkfsConfig), 0o644)
		base := filepath.Join(dir, "base.img")
		f, _ := os.Create(base)
		f.Truncate(4 << 20)
		f.Close()
		if err := testimg.RunE2fsprogs(dir, conf, "mke2fs", "-q", "-F", "-t", "ext4", "-b", "1024",
			"-O", "64bit,metadata_csum", "-J", "size=1", base); err != nil {
			fuzzBase.skipWhy = err.Error()
			return
		}
		data := testimg.LayoutData(7, 4<<10)
		copy(data[1024:], []byte{0xC0, 0x3B, 0x39, 0x98})
		os.WriteFile(filepath.Join(dir, "data"), data, 0o644)
		for i, open := range []string{"-c -v 3", "-c -v 2", "", "-c"} {
			img := filepath.Join(dir, fmt.Sprintf("seed%d.img", i))
			testimg.CopyFile(base, img)
			cmds := strings.Join([]string{
				"jo " + open,
				"jw -b 3000,3001,3002 data",
				"jw -r 3001",
				"jw -b 3001,3500 data",
				"jw -b 3600 -c data",
				"jc",
			}, "\n") + "\n"
			os.WriteFile(filepath.Join(dir, "cmds"), []byte(cmds), 0o644)
			if out, err := runQuiet("debugfs", "-w", "-f", filepath.Join(dir, "cmds"), img); err != nil {
				fuzzBase.skipWhy = fmt.Sprintf("debugfs: %v: %s", err, out)
				return
			}
			b, err := os.ReadFile(img)
			if err != nil {
				fuzzBase.skipWhy = err.Error()
				return
			}
			if i == 0 {
				out, err := runQuiet("debugfs", "-c", "-R", "bmap <8> 0", img)
				phys, perr := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
				if err != nil || perr != nil {
					fuzzBase.skipWhy = fmt.Sprintf("debugfs bmap: %v %v %q", err, perr, out)
					return
				}
				fuzzBase.img = b
				fuzzBase.jOff = phys * 1024
			}
			fuzzBase.seeds = append(fuzzBase.seeds, bytes.Clone(b[fuzzBase.jOff:fuzzBase.jOff+fuzzRegion]))
		}
	})
	if fuzzBase.skipWhy != "" {
		t.Skip("fuzz base image: " + fuzzBase.skipWhy)
	}
}

func runQuiet(name string, args ...string) (string, error) {
	p, err := testimg.FindTool(name)
	if err != nil {
		return "", err
	}
	var out, errOut bytes.Buffer
	cmd := execCommand(p, args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return out.String() + errOut.String(), err
	}
	return out.String(), nil
}

// patched reads base with patch laid over it at off, without copying the
// image for every input.
type patched struct {
	base  []byte
	off   int64
	patch []byte
}

func (p *patched) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 || off >= int64(len(p.base)) {
		return 0, fmt.Errorf("read at %d beyond the %d-byte image", off, len(p.base))
	}
	n := copy(b, p.base[off:])
	if lo, hi := max(off, p.off), min(off+int64(n), p.off+int64(len(p.patch))); lo < hi {
		copy(b[lo-off:hi-off], p.patch[lo-p.off:hi-p.off])
	}
	if n < len(b) {
		return n, fmt.Errorf("short read")
	}
	return n, nil
}

// FuzzRecover replaces the start of the journal (its superblock and the
// first 15 log blocks) of a small filesystem needing recovery and runs
// Recover and a read of every replayed block through the overlay. It must
// not panic, must finish quickly, and must stay within its memory bound:
// no more replayed blocks than twice the journal's length, and no more
// allocation than a few times the journal's size.
func FuzzRecover(f *testing.F) {
	loadFuzzBase(f)
	for _, s := range fuzzBase.seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > fuzzRegion {
			data = data[:fuzzRegion]
		}
		dev := &patched{base: fuzzBase.img, off: fuzzBase.jOff, patch: data}
		fsys, err := ext4.Open(dev, &ext4.Options{NoRecovery: true, DeviceSize: int64(len(fuzzBase.img))})
		if err != nil {
			t.Fatalf("the base image no longer opens: %v", err)
		}
		// runtime/metrics reads the allocation counter without stopping
		// the world, as ReadMemStats would for every input.
		sample := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
		metrics.Read(sample)
		before := sample[0].Value.Uint64()
		start := time.Now()
		res, err := Recover(dev, fsys)
		if res != nil {
			if len(res.Blocks) > 2*1024 {
				t.Fatalf("%d replayed blocks from a 1024-block journal", len(res.Blocks))
			}
			ov := res.Overlay(dev)
			buf := make([]byte, 3000)
			for _, b := range res.Blocks {
				ov.ReadAt(buf, int64(b.Target)*1024-1000)
			}
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("Recover took %v (err %v)", d, err)
		}
		metrics.Read(sample)
		if a := sample[0].Value.Uint64() - before; a > 64<<20 {
			t.Fatalf("Recover allocated %d MiB for a 1 MiB journal", a>>20)
		}
	})
}

var execCommand = exec.Command
