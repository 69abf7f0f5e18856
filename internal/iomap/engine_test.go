package iomap_test

import (
	"safefs/internal/iomap/abi"

	"bytes"
	"errors"
	"io"
	"os"
	"syscall"
	"testing"

	"safefs/internal/iomap"
	"safefs/internal/testimg"
)

// TestLayoutImage checks that the layout image has the layouts the oracle
// tests rely on it for, and what the engine makes of them: debugfs must
// list a fragmented "frag", two physically contiguous extents for
// "contig", and written / unwritten / written extents at consecutive
// device blocks for "mixed"; the engine must merge contig into one mapping
// and keep mixed in three.
func TestLayoutImage(t *testing.T) {
	img := testimg.LayoutImage(t)
	fsys, e := openImage(t, img)
	bs := uint64(testimg.LayoutBlockSize)

	exts := testimg.DebugfsExtentsBatch(t, img, []string{"/frag", "/contig", "/mixed"})
	single := 0
	for i := 1; i < len(exts[0]); i++ {
		if exts[0][i].Len == 1 && exts[0][i].Physical != exts[0][i-1].Physical+exts[0][i-1].Len {
			single++
		}
	}
	if single < testimg.LayoutPieces/3 {
		t.Errorf("frag has %d scattered one-block extents, want at least %d", single, testimg.LayoutPieces/3)
	}
	frag := resolve(t, fsys, "frag")
	segs, err := engineWalk(e, frag)
	if err != nil {
		t.Fatal(err)
	}
	if len(segs) < single {
		t.Errorf("frag: %d mappings for %d scattered extents", len(segs), single)
	}
	t.Logf("frag: %d leaf extents (%d scattered one-block ones), %d mappings", len(exts[0]), single, len(segs))

	c := exts[1]
	if len(c) < 2 || c[1].Physical != c[0].Physical+c[0].Len || c[1].Logical != c[0].Logical+c[0].Len {
		t.Errorf("contig: extents %+v, want at least two, physically contiguous", c)
	}
	contig := resolve(t, fsys, "contig")
	m, err := e.Map(contig, 0, contig.Size)
	want := iomap.Mapping{Offset: 0, Length: testimg.LayoutContigLen, Addr: c[0].Physical * bs, Type: abi.TypeMapped}
	if err != nil || m != want {
		t.Errorf("contig: Map = %v, %v; want %v", m, err, want)
	}
	// A request for one block still gets the whole first extent (the run
	// was looked up anyway) but not the second.
	m, err = e.Map(contig, 5, 1)
	if want.Length = c[0].Len * bs; err != nil || m != want {
		t.Errorf("contig: Map of one byte = %v, %v; want %v", m, err, want)
	}

	x := exts[2]
	if len(x) != 3 || x[1].Physical != x[0].Physical+x[0].Len || x[2].Physical != x[1].Physical+x[1].Len || !x[1].Uninit {
		t.Fatalf("mixed: extents %+v, want written, unwritten, written at consecutive blocks", x)
	}
	mixed := resolve(t, fsys, "mixed")
	got, err := engineWalk(e, mixed)
	if err != nil {
		t.Fatal(err)
	}
	a := x[0].Physical * bs
	wantSegs := []seg{
		{0, 8 * bs, abi.TypeMapped, a},
		{8 * bs, 24 * bs, abi.TypeUnwritten, a + 8*bs},
		{24 * bs, 32 * bs, abi.TypeMapped, a + 24*bs},
	}
	if err := diffSegs(got, wantSegs); err != nil {
		t.Errorf("mixed: %v", err)
	}
	// Unwritten blocks read as zeros although the device holds the
	// written data that was punched out.
	buf := make([]byte, 32*bs)
	if n, err := e.ReadAt(mixed, buf, 0); n != len(buf) || err != nil {
		t.Fatalf("mixed: ReadAt %d, %v", n, err)
	}
	if !bytes.Equal(buf[8*bs:24*bs], make([]byte, 16*bs)) || bytes.Equal(buf[:8*bs], make([]byte, 8*bs)) {
		t.Errorf("mixed: unwritten range not zeros, or written range zeros")
	}
}

// TestMapRequests checks how the requested range bounds a mapping: a HOLE
// past the end of file reaches exactly to pos+count rounded up, never past
// MaxLFSFileSize+1; a zero count is one byte; positions past
// MaxLFSFileSize are refused; and non-regular files have no mappings.
func TestMapRequests(t *testing.T) {
	fsys, e := openImage(t, testimg.LayoutImage(t))
	in := resolve(t, fsys, "mixed")
	bs := uint64(e.BlockSize())
	for _, c := range []struct {
		pos, count uint64
		want       iomap.Mapping
	}{
		{in.Size, 1, iomap.Mapping{Offset: in.Size, Length: bs, Addr: abi.NullAddr}},
		{in.Size + 1, 0, iomap.Mapping{Offset: in.Size, Length: bs, Addr: abi.NullAddr}},
		{in.Size + 5, 3 * bs, iomap.Mapping{Offset: in.Size, Length: 4 * bs, Addr: abi.NullAddr}},
		{1 << 40, 1 << 62, iomap.Mapping{Offset: 1 << 40, Length: 1 << 62, Addr: abi.NullAddr}},
		{abi.MaxLFSFileSize, ^uint64(0), iomap.Mapping{Offset: 1<<63 - bs, Length: bs, Addr: abi.NullAddr}},
		{1<<63 - 10*bs, ^uint64(0), iomap.Mapping{Offset: 1<<63 - 10*bs, Length: 10 * bs, Addr: abi.NullAddr}},
	} {
		m, err := e.Map(in, c.pos, c.count)
		if err != nil || m != c.want {
			t.Errorf("Map(%d, %d) = %v, %v; want %v", c.pos, c.count, m, err, c.want)
			continue
		}
		if err := checkMapping(e.BlockSize(), m, c.pos, c.count); err != nil {
			t.Errorf("Map(%d, %d): %v", c.pos, c.count, err)
		}
	}
	if _, err := e.Map(in, 1<<63, 1); !errors.Is(err, iomap.ErrOffset) {
		t.Errorf("Map past MaxLFSFileSize: %v", err)
	}
	root := resolve(t, fsys, "")
	if _, err := e.Map(root, 0, 1); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("Map of a directory: %v", err)
	}
	if _, err := e.ReadAt(root, make([]byte, 1), 0); !errors.Is(err, iomap.ErrNotRegular) {
		t.Errorf("ReadAt of a directory: %v", err)
	}
	if _, err := e.Seek(in, 0, io.SeekCurrent); !errors.Is(err, iomap.ErrWhence) {
		t.Errorf("Seek with SEEK_CUR: %v", err)
	}
}

// TestBegin checks the FUSE_IOMAP_BEGIN answer: reads and reports get the
// mapping and PURE_OVERWRITE, and the reply passes the kernel's checks;
// writes are refused with EROFS.
func TestBegin(t *testing.T) {
	fsys, e := openImage(t, testimg.LayoutImage(t))
	in := resolve(t, fsys, "mixed")
	for _, op := range []uint32{0, abi.OpDirect, abi.OpReport, abi.OpFault} {
		req := abi.BeginIn{OpFlags: op, AttrIno: uint64(in.Ino), Pos: 9000, Count: 100000}
		out, err := e.Begin(in, req, 1)
		if err != nil {
			t.Fatalf("op %#x: %v", op, err)
		}
		if err := abi.CheckBeginReply(req, out, e.BlockSize(), devOne); err != nil {
			t.Errorf("op %#x: %v", op, err)
		}
		if out.Read.Type != abi.TypeUnwritten || out.Read.Dev != 1 || out.Write.Type != abi.TypePureOverwrite {
			t.Errorf("op %#x: reply %+v", op, out)
		}
	}
	for _, op := range []uint32{abi.OpWrite, abi.OpZero, abi.OpUnshare, abi.OpWriteback, abi.OpWrite | abi.OpDirect} {
		if _, err := e.Begin(in, abi.BeginIn{OpFlags: op, Pos: 0, Count: 1}, 1); !errors.Is(err, syscall.EROFS) {
			t.Errorf("op %#x: %v, want EROFS", op, err)
		}
	}
}

// TestReadAtMatchesExt4 reads every file of the layout image at odd
// offsets through the engine and through internal/ext4's own reader, which
// does not go through the engine's merging.
func TestReadAtMatchesExt4(t *testing.T) {
	fsys, e := openImage(t, testimg.LayoutImage(t))
	for _, name := range []string{"frag", "contig", "mixed"} {
		in := resolve(t, fsys, name)
		for _, c := range []struct{ off, n int64 }{{0, 1}, {1023, 2}, {5000, 70000}, {0, int64(in.Size) + 10}, {int64(in.Size) - 3, 7}, {int64(in.Size), 5}} {
			a, b := make([]byte, c.n), make([]byte, c.n)
			na, ea := e.ReadAt(in, a, c.off)
			nb, eb := fsys.ReadAt(in, b, c.off)
			if na != nb || ea != eb || !bytes.Equal(a[:na], b[:nb]) {
				t.Errorf("%s at %d+%d: engine %d, %v; ext4 %d, %v", name, c.off, c.n, na, ea, nb, eb)
			}
		}
	}
}

// countingDev counts device reads.
type countingDev struct {
	r     io.ReaderAt
	reads int
}

func (c *countingDev) ReadAt(p []byte, off int64) (int, error) {
	c.reads++
	return c.r.ReadAt(p, off)
}

// TestReadAtOneReadPerMapping checks the promise of the READ path: one
// device read per merged mapping, so that a whole contiguous file is one
// read although it has two extents.
func TestReadAtOneReadPerMapping(t *testing.T) {
	fsys, e := openImage(t, testimg.LayoutImage(t))
	in := resolve(t, fsys, "contig")
	f, err := os.Open(testimg.LayoutImage(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dev := &countingDev{r: f}
	ce := iomap.New(fsys, dev)
	buf := make([]byte, in.Size)
	if n, err := ce.ReadAt(in, buf, 0); n != len(buf) || err != nil {
		t.Fatalf("ReadAt: %d, %v", n, err)
	}
	if dev.reads != 1 {
		t.Errorf("%d device reads for a contiguous file of two extents, want 1", dev.reads)
	}
	ref := make([]byte, in.Size)
	if _, err := e.ReadAt(in, ref, 0); err != nil || !bytes.Equal(buf, ref) {
		t.Errorf("contents differ between engines: %v", err)
	}
	frag := resolve(t, fsys, "frag")
	segs, err := engineWalk(e, frag)
	if err != nil {
		t.Fatal(err)
	}
	mapped := 0
	for _, s := range segs {
		if s.typ == abi.TypeMapped {
			mapped++
		}
	}
	dev.reads = 0
	if _, err := ce.ReadAt(frag, make([]byte, frag.Size), 0); err != nil {
		t.Fatal(err)
	}
	if dev.reads != mapped {
		t.Errorf("frag: %d device reads for %d mapped mappings", dev.reads, mapped)
	}
}
