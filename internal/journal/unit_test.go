package journal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"

	"safefs/internal/testimg"
)

// The CRC check values are those of the CRC catalogue (reveng): the
// checksum of "123456789" for CRC-32/MPEG-2 (crc32_be from ~0, no final
// inversion) and CRC-32C (crc32c from ~0, with the final inversion the
// kernel's raw crc32c leaves to the caller).
func TestCRCCheckValues(t *testing.T) {
	in := []byte("123456789")
	if got := crc32BE(^uint32(0), in); got != 0x0376E6E7 {
		t.Errorf("crc32_be: 0x%08x, want 0x0376E6E7 (CRC-32/MPEG-2)", got)
	}
	if got := ^crc32c(^uint32(0), in); got != 0xE3069283 {
		t.Errorf("crc32c: 0x%08x, want 0xE3069283 (CRC-32C)", got)
	}
	// The raw form chains: crc32c(crc32c(s, a), b) == crc32c(s, a+b).
	if crc32c(crc32c(7, in[:4]), in[4:]) != crc32c(7, in) {
		t.Error("crc32c does not chain")
	}
}

func TestTIDCompare(t *testing.T) {
	for _, c := range []struct {
		x, y   uint32
		gt, ge bool
	}{
		{1, 0, true, true}, {0, 0, false, true}, {0, 1, false, false},
		{0, 0xFFFFFFFF, true, true}, {0xFFFFFFFF, 0, false, false},
		{5, 0xFFFFFFFE, true, true}, {0x80000000, 0, false, false},
	} {
		if tidGT(c.x, c.y) != c.gt || tidGEQ(c.x, c.y) != c.ge {
			t.Errorf("tid_gt(%d, %d) = %v, tid_geq = %v; want %v, %v", c.x, c.y, tidGT(c.x, c.y), tidGEQ(c.x, c.y), c.gt, c.ge)
		}
	}
}

// TestOverlayReads checks the overlay against the device with the replay
// applied by hand: aligned and unaligned reads, reads across several
// replayed and untouched blocks, escaped blocks, and reads at the end of
// the device.
func TestOverlayReads(t *testing.T) {
	const bs = 1024
	r := rand.New(rand.NewPCG(1, 2))
	dev := make([]byte, 64*bs)
	for i := range dev {
		dev[i] = byte(r.Uint32())
	}
	res := &Result{BlockSize: bs, Blocks: []Block{
		{Target: 0, Source: 40},
		{Target: 3, Source: 41, Escaped: true},
		{Target: 4, Source: 42},
		{Target: 10, Source: 43, Escaped: true},
		{Target: 63, Source: 44},
		{Target: 70, Source: 45}, // beyond the device: never visible
	}}
	want := bytes.Clone(dev)
	for _, b := range res.Blocks {
		if b.Target >= 64 {
			continue
		}
		copy(want[b.Target*bs:], dev[b.Source*bs:(b.Source+1)*bs])
		if b.Escaped {
			copy(want[b.Target*bs:], []byte{0xC0, 0x3B, 0x39, 0x98})
		}
	}
	ov := res.Overlay(bytes.NewReader(dev))
	check := func(off, n int) {
		t.Helper()
		got := make([]byte, n)
		m, err := ov.ReadAt(got, int64(off))
		end := min(off+n, len(want))
		if m != end-off {
			t.Fatalf("ReadAt(%d, %d): %d bytes, want %d (err %v)", off, n, m, end-off, err)
		}
		if m < n && err == nil {
			t.Fatalf("ReadAt(%d, %d): short read without an error", off, n)
		}
		if !bytes.Equal(got[:m], want[off:end]) {
			t.Fatalf("ReadAt(%d, %d) differs from the replayed device", off, n)
		}
	}
	check(0, len(dev))
	for b := 0; b < 64; b++ {
		check(b*bs, bs)
	}
	for i := 0; i < 2000; i++ {
		off := r.IntN(len(dev))
		check(off, 1+r.IntN(5*bs))
	}
	check(len(dev)-10, 100)

	// A Result without blocks (or none at all) is the device itself.
	var nilRes *Result
	for _, o := range []*Overlay{nilRes.Overlay(bytes.NewReader(dev)), (&Result{BlockSize: bs}).Overlay(bytes.NewReader(dev))} {
		got := make([]byte, 3*bs)
		if _, err := o.ReadAt(got, 5); err != nil || !bytes.Equal(got, dev[5:5+3*bs]) {
			t.Errorf("empty overlay: %v", err)
		}
	}
}

// failingReader fails reads at or beyond a limit.
type failingReader struct {
	data  []byte
	limit int64
}

func (f *failingReader) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.limit {
		return 0, errors.New("injected I/O error")
	}
	return copy(p, f.data[off:]), nil
}

// TestOverlaySourceError checks that a failing read of a replayed block's
// data in the journal surfaces as an error, not as stale bytes.
func TestOverlaySourceError(t *testing.T) {
	const bs = 1024
	dev := &failingReader{data: make([]byte, 16*bs), limit: 8 * bs}
	res := &Result{BlockSize: bs, Blocks: []Block{{Target: 2, Source: 12}}}
	buf := make([]byte, 4*bs)
	n, err := res.Overlay(dev).ReadAt(buf, 100)
	if err == nil || n != 2*bs-100 {
		t.Errorf("ReadAt: %d, %v; want %d bytes and the source's error", n, err, 2*bs-100)
	}
}

func TestErrorMessages(t *testing.T) {
	var u [16]byte
	for i := range u {
		u[i] = byte(i)
	}
	for _, c := range []struct {
		err  error
		want string
	}{
		{&ExternalJournalError{Dev: 0x801, UUID: u}, "external device (device number 0x801, journal UUID 00010203-0405-0607-0809-0a0b0c0d0e0f)"},
		{&FeatureError{Feature: "fast_commit", Reason: "r"}, `unsupported journal feature "fast_commit": r`},
		{corruptf(BadRevoke, 5, "r_count %d", 7), "journal: block 5: revoke block: r_count 7"},
		{&CorruptError{Kind: BadJournalInode, Block: -1, Detail: "d", Err: io.EOF}, "journal: journal inode: d: EOF"},
	} {
		if got := c.err.Error(); !bytes.Contains([]byte(got), []byte(c.want)) {
			t.Errorf("%T: %q does not contain %q", c.err, got, c.want)
		}
	}
	err := fmt.Errorf("wrapped: %w", badCsumf(BadCommit, 3, "x"))
	if !errors.Is(err, ErrCorrupt) {
		t.Error("errors.Is(ErrCorrupt) is false for a CorruptError")
	}
	if ce, ok := errAs[*CorruptError](err); !ok || !ce.IsChecksum() {
		t.Error("a checksum CorruptError does not say so")
	}
	if !errors.Is(&CorruptError{Kind: BadJournalInode, Block: -1, Err: io.EOF}, io.EOF) {
		t.Error("CorruptError does not unwrap")
	}
}

// TestOverlayConcurrent reads one overlay from several goroutines (run
// with -race): the overlay shares its Result and buffer pool.
func TestOverlayConcurrent(t *testing.T) {
	const bs = 1024
	dev := make([]byte, 32*bs)
	for i := range dev {
		dev[i] = byte(i * 7)
	}
	res := &Result{BlockSize: bs, Blocks: []Block{{Target: 1, Source: 20}, {Target: 2, Source: 21, Escaped: true}}}
	ov := res.Overlay(bytes.NewReader(dev))
	want := make([]byte, 3*bs)
	if _, err := ov.ReadAt(want, 100); err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	for g := 0; g < 4; g++ {
		go func() {
			got := make([]byte, 3*bs)
			for i := 0; i < 500; i++ {
				if _, err := ov.ReadAt(got, 100); err != nil || !bytes.Equal(got, want) {
					done <- fmt.Errorf("concurrent read differs (err %v)", err)
					return
				}
			}
			done <- nil
		}()
	}
	for g := 0; g < 4; g++ {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

// TestJournalLargerThanFilesystem makes the journal claim more blocks than
// the whole filesystem has (its superblock's s_maxlen and its inode's
// size): recovery must refuse it at once, naming the lengths, rather than
// scan a log of that length.
func TestJournalLargerThanFilesystem(t *testing.T) {
	img := testimg.Build(t, testimg.Spec{Name: "journal-too-long", MkfsArgs: []string{"-t", "ext4", "-O", "^metadata_csum"}, SizeMB: 16, Tree: testimg.TreeSmall})
	p := tempCopy(t, img, "too-long.img")
	im := openImage(t, p)
	bs := uint64(im.fsys.BlockSize())
	blocks := im.fsys.Superblock().BlocksCount
	jsbBlock, err := strconv.ParseUint(strings.TrimSpace(debugfs(t, p, "bmap <8> 0")), 10, 64)
	if err != nil {
		t.Fatalf("debugfs bmap <8> 0: %v", err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	long := uint32(blocks + 1000)
	// s_maxlen, and i_size to match (else the journal file is too short).
	if _, err := f.WriteAt(binary.BigEndian.AppendUint32(nil, long), int64(jsbBlock*bs)+0x10); err != nil {
		t.Fatal(err)
	}
	f.Close()
	tool(t, "debugfs", "-w", "-R", fmt.Sprintf("sif <8> size %d", uint64(long)*bs), p)
	im = openImage(t, p)
	_, err = openJournal(im.f, im.fsys, 8)
	var ce *CorruptError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "more than the whole filesystem") {
		t.Fatalf("got %v, want a corrupt journal longer than the filesystem", err)
	}
}
