package iomap_test

import (
	"safefs/internal/iomap/abi"

	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"

	"safefs/internal/ext4"
	"safefs/internal/iomap"
	"safefs/internal/testimg"
)

// seg is one mapping in a neutral form, so that the engine's answers and
// the oracles' (FIEMAP, debugfs) can be compared.
type seg struct {
	off, end uint64
	typ      uint16
	addr     uint64 // device byte of off; NullAddr for holes and inline data
}

func (s seg) String() string {
	return iomap.Mapping{Offset: s.off, Length: s.end - s.off, Addr: s.addr, Type: s.typ}.String()
}

// merge joins adjacent segments of one type that continue each other on
// the device (holes and inline data: always), which is what a mapping of
// maximal length covers.
func merge(in []seg) []seg {
	var out []seg
	for _, s := range in {
		if k := len(out) - 1; k >= 0 && out[k].end == s.off && out[k].typ == s.typ &&
			(s.addr == abi.NullAddr && out[k].addr == abi.NullAddr ||
				out[k].addr != abi.NullAddr && out[k].addr+(out[k].end-out[k].off) == s.addr) {
			out[k].end = s.end
			continue
		}
		out = append(out, s)
	}
	return out
}

// fillHoles clips sorted segments to [0, end) and makes the gaps holes.
func fillHoles(in []seg, end uint64) ([]seg, error) {
	var out []seg
	pos := uint64(0)
	for _, s := range in {
		if s.off < pos || s.end <= s.off {
			return nil, fmt.Errorf("segment %v overlaps the previous one or is empty", s)
		}
		if s.off >= end {
			break
		}
		s.end = min(s.end, end)
		if s.off > pos {
			out = append(out, seg{pos, s.off, abi.TypeHole, abi.NullAddr})
		}
		out = append(out, s)
		pos = s.end
	}
	if pos < end {
		out = append(out, seg{pos, end, abi.TypeHole, abi.NullAddr})
	}
	return out, nil
}

func roundUp(n, bs uint64) uint64 { return (n + bs - 1) / bs * bs }

func devOne(d uint32) bool { return d == 1 }

// checkMapping checks what every mapping must satisfy whatever the
// oracle: it starts at pos rounded down to a block, and the kernel
// accepts it (as the read mapping, with PURE_OVERWRITE for writes) in
// reply to a read of count bytes at pos.
func checkMapping(bs uint32, m iomap.Mapping, pos, count uint64) error {
	if m.Offset != pos&^uint64(bs-1) {
		return fmt.Errorf("Map(%d) = %v: does not start at the block holding pos", pos, m)
	}
	return abi.CheckBeginReply(abi.BeginIn{Pos: pos, Count: count}, m.Reply(1), bs, devOne)
}

// engineWalk maps the file from 0 to its size rounded up to a block, each
// Map asking for the rest of the file, so that every mapping must be
// merged as far as it can be; it checks each mapping with checkMapping.
func engineWalk(e *iomap.Engine, in *ext4.Inode) ([]seg, error) {
	bs := uint64(e.BlockSize())
	eof := roundUp(in.Size, bs)
	var out []seg
	for pos := uint64(0); pos < eof; {
		m, err := e.Map(in, pos, eof-pos)
		if err != nil {
			return nil, fmt.Errorf("Map(%d): %w", pos, err)
		}
		if err := checkMapping(e.BlockSize(), m, pos, eof-pos); err != nil {
			return nil, err
		}
		if m.End() > eof {
			return nil, fmt.Errorf("Map(%d) = %v: reaches past the end of file %d", pos, m, eof)
		}
		out = append(out, seg{m.Offset, m.End(), m.Type, m.Addr})
		pos = m.End()
	}
	return out, nil
}

// fiemapSegs turns the kernel's FIEMAP extents into segments over
// [0, eof): unwritten extents by their flag, inline data (reported at its
// byte length, with the inode's address) as INLINE of whole blocks.
func fiemapSegs(exts []testimg.FiemapExtent, bs, eof uint64) ([]seg, error) {
	var segs []seg
	for _, x := range exts {
		s := seg{x.Logical, x.Logical + x.Length, abi.TypeMapped, x.Physical}
		switch {
		case x.Flags&testimg.FiemapExtentDataInline != 0:
			s.typ, s.addr, s.end = abi.TypeInline, abi.NullAddr, roundUp(s.end, bs)
		case x.Flags&(testimg.FiemapExtentUnknown|testimg.FiemapExtentDelalloc|testimg.FiemapExtentEncoded|testimg.FiemapExtentNotAligned) != 0:
			return nil, fmt.Errorf("unexpected FIEMAP extent %+v", x)
		case x.Flags&testimg.FiemapExtentUnwritten != 0:
			s.typ = abi.TypeUnwritten
		}
		if s.off%bs != 0 || s.end%bs != 0 {
			return nil, fmt.Errorf("FIEMAP extent %+v is not block aligned", x)
		}
		segs = append(segs, s)
	}
	return fillHoles(segs, eof)
}

// debugfsSegs turns debugfs's leaf extents into segments over [0, eof).
func debugfsSegs(exts []testimg.Extent, bs, eof uint64) ([]seg, error) {
	var segs []seg
	for _, x := range exts {
		s := seg{x.Logical * bs, (x.Logical + x.Len) * bs, abi.TypeMapped, x.Physical * bs}
		if x.Uninit {
			s.typ = abi.TypeUnwritten
		}
		segs = append(segs, s)
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].off < segs[j].off })
	return fillHoles(segs, eof)
}

// diffSegs reports the first difference between two segment lists.
func diffSegs(got, want []seg) error {
	for i := 0; i < min(len(got), len(want)); i++ {
		if got[i] != want[i] {
			return fmt.Errorf("mapping %d: engine %v, oracle %v (engine has %d mappings, oracle %d)", i, got[i], want[i], len(got), len(want))
		}
	}
	if len(got) != len(want) {
		return fmt.Errorf("engine has %d mappings, oracle %d: %v vs %v", len(got), len(want), got[min(len(got), len(want)):], want[min(len(got), len(want)):])
	}
	return nil
}

// probes returns the offsets at which reads and seeks are compared: block
// and file-size boundaries, each mapping's edges, and random offsets.
func probes(size, bs uint64, segs []seg, r *rand.Rand) []uint64 {
	if size == 0 {
		// Empty files (100,000 of them in the large-directory images)
		// have one answer everywhere.
		return []uint64{0}
	}
	pts := []uint64{0, 1, bs - 1, bs, bs + 1, size - 1, size, size + 1, roundUp(size, bs)}
	for i, s := range segs {
		if i == 48 {
			break
		}
		pts = append(pts, s.off-1, s.off, s.off+1, s.end-1)
	}
	for i := 0; i < 12; i++ {
		pts = append(pts, r.Uint64N(size+bs))
	}
	slices.Sort(pts)
	pts = slices.Compact(pts)
	return slices.DeleteFunc(pts, func(p uint64) bool { return p > 1<<62 })
}

// readLens are the read sizes tried at each probe: unaligned, sub-block,
// multi-block and larger than most mappings.
var readLens = []int{1, 511, 4095, 4097, 3*4096 + 7, 200000}

// oracleStats counts what the oracle tests compared.
type oracleStats struct {
	mu                               sync.Mutex
	images, files, mappings          int
	reads, seeks, seeksSkipped       int
	bytes                            int64
	types                            map[uint16]int // oracle segments by type
	blockMapped, extentMapped, large int
}

func (s *oracleStats) add(f func(s *oracleStats)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.types == nil {
		s.types = map[uint16]int{}
	}
	f(s)
}

// compareRead reads len(buf) bytes at off through the kernel (pread) and
// the engine, and requires the same count, bytes and end-of-file signal.
func compareRead(e *iomap.Engine, in *ext4.Inode, f *os.File, off uint64, n int) (int, error) {
	// Past the end only the first bytes matter: do not allocate the rest.
	if off >= in.Size {
		n = min(n, 16)
	} else if rest := in.Size - off; uint64(n) > rest+16 {
		n = int(rest + 16)
	}
	want := make([]byte, n)
	got := make([]byte, n)
	wn, werr := f.ReadAt(want, int64(off))
	if werr != nil && werr != io.EOF {
		return 0, fmt.Errorf("kernel pread of %d at %d: %v", n, off, werr)
	}
	gn, gerr := e.ReadAt(in, got, int64(off))
	if gerr != nil && gerr != io.EOF {
		return 0, fmt.Errorf("ReadAt(%d, %d): %v", n, off, gerr)
	}
	if gn != wn || !bytes.Equal(got[:gn], want[:wn]) {
		return 0, fmt.Errorf("ReadAt(%d bytes at %d): %d bytes, kernel %d; contents differ: %v", n, off, gn, wn, !bytes.Equal(got[:min(gn, wn)], want[:min(gn, wn)]))
	}
	// Go's pread loop says io.EOF exactly when it came back short.
	if (gerr == io.EOF) != (wn < n) {
		return 0, fmt.Errorf("ReadAt(%d bytes at %d): error %v with %d bytes of %d", n, off, gerr, gn, n)
	}
	return gn, nil
}

// compareSeek asks the kernel and the engine for SEEK_DATA or SEEK_HOLE
// from off. skipped reports the kernel's ENOENT on inline files whose size
// exceeds their inline data (an ext4 quirk: iomap_seek_* meets a range
// ext4_iomap_begin_report refuses), which has no answer to compare with.
func compareSeek(e *iomap.Engine, in *ext4.Inode, f *os.File, off uint64, whence int) (skipped bool, err error) {
	name := map[int]string{iomap.SeekData: "SEEK_DATA", iomap.SeekHole: "SEEK_HOLE"}[whence]
	want, werr := syscall.Seek(int(f.Fd()), int64(off), whence)
	if errors.Is(werr, syscall.ENOENT) && in.HasInlineData() {
		return true, nil
	}
	got, gerr := e.Seek(in, off, whence)
	switch {
	case errors.Is(werr, syscall.ENXIO):
		if !errors.Is(gerr, syscall.ENXIO) {
			return false, fmt.Errorf("%s from %d: engine %d, %v; kernel ENXIO", name, off, got, gerr)
		}
	case werr != nil:
		return false, fmt.Errorf("%s from %d: kernel: %v", name, off, werr)
	case gerr != nil || got != uint64(want):
		return false, fmt.Errorf("%s from %d: engine %d, %v; kernel %d", name, off, got, gerr, want)
	}
	return false, nil
}

// compareKernelFile compares one regular file of the kernel's mount with
// the engine: mappings with FIEMAP, the whole content and reads at the
// probes with pread, and SEEK_DATA/SEEK_HOLE at the probes with lseek.
func compareKernelFile(t *testing.T, fsys *ext4.FS, e *iomap.Engine, mnt, p string, r *rand.Rand, st *oracleStats) {
	rel, _ := filepath.Rel(mnt, p)
	fail := func(format string, args ...any) { t.Errorf("%s: %s", rel, fmt.Sprintf(format, args...)) }
	f, err := os.Open(p)
	if err != nil {
		fail("%v", err)
		return
	}
	defer f.Close()
	var sys syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &sys); err != nil {
		fail("%v", err)
		return
	}
	in, err := fsys.Inode(uint32(sys.Ino))
	if err != nil {
		fail("inode %d: %v", sys.Ino, err)
		return
	}
	if in.Size != uint64(sys.Size) {
		fail("size %d, kernel %d", in.Size, sys.Size)
		return
	}
	bs := uint64(e.BlockSize())
	eof := roundUp(in.Size, bs)
	exts, err := testimg.Fiemap(f)
	if err != nil {
		fail("%v", err)
		return
	}
	want, err := fiemapSegs(exts, bs, eof)
	if err != nil {
		fail("%v", err)
		return
	}
	want = merge(want)
	got, err := engineWalk(e, in)
	if err != nil {
		fail("%v", err)
		return
	}
	if err := diffSegs(got, want); err != nil {
		fail("%v", err)
	}
	var reads, seeks, skipped int
	var nbytes int64
	pts := probes(in.Size, bs, want, r)
	// Seeks first, while the file has nothing in the page cache: ext4
	// answers from the page cache too, and counts an unwritten range
	// whose pages are uptodate (say, after a read of its zeros) as data.
	// The engine, like a FUSE server, sees no page cache: it answers as
	// ext4 does for a file nobody has read.
	for _, off := range pts {
		for _, whence := range []int{iomap.SeekData, iomap.SeekHole} {
			skip, err := compareSeek(e, in, f, off, whence)
			if err != nil {
				fail("%v", err)
			}
			seeks++
			if skip {
				skipped++
			}
		}
	}
	// The whole file, in unaligned chunks.
	const chunk = 1<<20 + 4093
	for off := uint64(0); off < in.Size; off += chunk {
		n, err := compareRead(e, in, f, off, chunk)
		if err != nil {
			fail("%v", err)
			break
		}
		reads++
		nbytes += int64(n)
	}
	for i, off := range pts {
		lens := []int{readLens[i%len(readLens)], readLens[(i+3)%len(readLens)]}
		if in.Size == 0 {
			lens = lens[:1]
		}
		for _, n := range lens {
			got, err := compareRead(e, in, f, off, n)
			if err != nil {
				fail("%v", err)
			}
			reads++
			nbytes += int64(got)
		}
	}
	st.add(func(s *oracleStats) {
		s.files++
		s.mappings += len(want)
		s.reads += reads
		s.seeks += seeks
		s.seeksSkipped += skipped
		s.bytes += nbytes
		for _, w := range want {
			s.types[w.typ]++
		}
		switch {
		case in.HasInlineData():
		case in.Flags&ext4.FlagExtents != 0:
			s.extentMapped++
		default:
			s.blockMapped++
		}
		if len(want) > 100 {
			s.large++
		}
	})
}

// compareKernelImage compares every regular file of img.
func compareKernelImage(t *testing.T, img string, st *oracleStats) {
	fsys, e := openImage(t, img)
	r := rand.New(rand.NewPCG(uint64(len(img)), 7))
	testimg.WithKernelMount(t, img, func(mnt string) {
		perDir := map[string]int{}
		err := filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.Type().IsRegular() {
				return nil
			}
			// Every file of the matrix trees (at most 500 a
			// directory), but only every 100th of the 100,000 empty
			// files of the large-directory images: they all have the
			// same (empty) mapping, and comparing them all would
			// triple the test's time.
			dir := filepath.Dir(p)
			if perDir[dir]++; perDir[dir] > 1000 && perDir[dir]%100 != 0 {
				return nil
			}
			compareKernelFile(t, fsys, e, mnt, p, r, st)
			return nil
		})
		if err != nil {
			t.Errorf("walking the kernel's mount: %v", err)
		}
	})
	st.add(func(s *oracleStats) { s.images++ })
}

// TestKernelOracle compares the engine with the kernel's own ext4 on every
// image of the format matrix the kernel can mount, and on the layout
// image: for every regular file, the mappings over the whole file against
// FIEMAP (same types, same device addresses, same holes, and each mapping
// as long as it can be), the contents read in unaligned chunks and at
// probe offsets against pread, and SEEK_DATA / SEEK_HOLE at the probes
// against lseek. It then checks that the files compared covered every kind
// of mapping and both block-mapped and extent-mapped files.
func TestKernelOracle(t *testing.T) {
	testimg.RequireKernelMount(t)
	var st oracleStats
	type image struct {
		name  string
		build func(t *testing.T) string
	}
	var images []image
	for _, spec := range testimg.Matrix() {
		if spec.NoKernel {
			continue // TestDebugfsOracle
		}
		if testing.Short() && (spec.Tree == testimg.TreeLargeDir || spec.Tree == testimg.TreeLargeDirLong) {
			continue
		}
		images = append(images, image{spec.Name, func(t *testing.T) string { return testimg.Build(t, spec) }})
	}
	images = append(images, image{"layout", func(t *testing.T) string { return testimg.LayoutImage(t) }})
	// Builds are serialized (testimg.Build holds a lock) and the mmp
	// image's takes 22 seconds (libext2fs opens it read-write twice, for
	// the debugfs fix-ups and for e2fsck -fyD, and each open sleeps out
	// twice the MMP interval plus one second), so it is started last, to
	// overlap with the other images' comparisons; the large directories,
	// the other slow builds, first. Images run four at a time whatever -parallel says: most of
	// their time is spent waiting for tools and mounts.
	order := func(n string) int {
		switch {
		case strings.Contains(n, "largedir"):
			return 0
		case strings.Contains(n, "mmp"):
			return 2
		}
		return 1
	}
	slices.SortStableFunc(images, func(a, b image) int { return order(a.name) - order(b.name) })
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for _, im := range images {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			t.Run(im.name, func(t *testing.T) { compareKernelImage(t, im.build(t), &st) })
		}()
	}
	wg.Wait()
	wantImages := len(images)
	t.Logf("compared %d images, %d files, %d oracle mappings (%d mapped, %d unwritten, %d hole, %d inline), %d reads (%d MiB), %d seeks (%d skipped for the kernel's inline ENOENT); %d extent-mapped, %d block-mapped files, %d with over 100 mappings",
		st.images, st.files, st.mappings, st.types[abi.TypeMapped], st.types[abi.TypeUnwritten], st.types[abi.TypeHole], st.types[abi.TypeInline],
		st.reads, st.bytes>>20, st.seeks, st.seeksSkipped, st.extentMapped, st.blockMapped, st.large)
	if st.images != wantImages || t.Failed() {
		return // a filtered or failed run proves nothing about coverage
	}
	for typ, name := range map[uint16]string{abi.TypeMapped: "mapped", abi.TypeUnwritten: "unwritten", abi.TypeHole: "hole", abi.TypeInline: "inline"} {
		if st.types[typ] == 0 {
			t.Errorf("no %s mapping was compared", name)
		}
	}
	if st.blockMapped == 0 || st.extentMapped == 0 || st.large == 0 {
		t.Errorf("coverage: %d block-mapped, %d extent-mapped, %d fragmented files", st.blockMapped, st.extentMapped, st.large)
	}
}

// walkFiles lists the regular files of fsys by path, through internal/ext4.
func walkFiles(t *testing.T, fsys *ext4.FS) map[string]*ext4.Inode {
	files := map[string]*ext4.Inode{}
	var walk func(ino uint32, p string)
	walk = func(ino uint32, p string) {
		in, err := fsys.Inode(ino)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if in.IsRegular() {
			files[p] = in
			return
		}
		if !in.IsDir() {
			return
		}
		var kids []ext4.DirEntry
		err = fsys.ReadDir(in, 0, func(d ext4.DirEntry) bool {
			if n := string(d.Name); n != "." && n != ".." {
				kids = append(kids, ext4.DirEntry{Name: append([]byte(nil), d.Name...), Ino: d.Ino})
			}
			return true
		})
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		for _, k := range kids {
			walk(k.Ino, path.Join(p, string(k.Name)))
		}
	}
	walk(2, "")
	return files
}

// modelSeek answers SEEK_DATA / SEEK_HOLE from oracle segments, as lseek
// on ext4 does (only MAPPED is data).
func modelSeek(segs []seg, size, off uint64, whence int) (uint64, bool) {
	if off >= size {
		return 0, false
	}
	for _, s := range segs {
		if s.end <= off || (s.typ == abi.TypeMapped) != (whence == iomap.SeekData) {
			continue
		}
		pos := max(off, s.off)
		if whence == iomap.SeekData {
			return pos, pos < size
		}
		return min(pos, size), true
	}
	if whence == iomap.SeekData {
		return 0, false
	}
	return size, true
}

// TestDebugfsOracle checks the images the kernel cannot mount (64 KiB
// blocks) against debugfs: mappings against its extent listing, contents
// against its dump (files up to 32 MiB: it dumps holes in full), and
// seeks against a model built from its extents.
func TestDebugfsOracle(t *testing.T) {
	var files, mappings, dumped, seeks int
	for _, spec := range testimg.Matrix() {
		if !spec.NoKernel {
			continue
		}
		t.Run(spec.Name, func(t *testing.T) {
			img := testimg.Build(t, spec)
			fsys, e := openImage(t, img)
			bs := uint64(e.BlockSize())
			all := walkFiles(t, fsys)
			var paths, small []string
			for p, in := range all {
				if in.Flags&ext4.FlagExtents == 0 {
					t.Errorf("%s: not extent-mapped: debugfs lists no extents for it", p)
					continue
				}
				paths = append(paths, p)
				if in.Size <= 32<<20 {
					small = append(small, p)
				}
			}
			sort.Strings(paths)
			sort.Strings(small)
			r := rand.New(rand.NewPCG(3, 4))
			for i, exts := range testimg.DebugfsExtentsBatch(t, img, paths) {
				p, in := paths[i], all[paths[i]]
				want, err := debugfsSegs(exts, bs, roundUp(in.Size, bs))
				if err != nil {
					t.Errorf("%s: %v", p, err)
					continue
				}
				want = merge(want)
				got, err := engineWalk(e, in)
				if err == nil {
					err = diffSegs(got, want)
				}
				if err != nil {
					t.Errorf("%s: %v", p, err)
				}
				files++
				mappings += len(want)
				for _, off := range probes(in.Size, bs, want, r) {
					for _, whence := range []int{iomap.SeekData, iomap.SeekHole} {
						wantOff, ok := modelSeek(want, in.Size, off, whence)
						gotOff, err := e.Seek(in, off, whence)
						if ok && (err != nil || gotOff != wantOff) || !ok && !errors.Is(err, syscall.ENXIO) {
							t.Errorf("%s: seek %d from %d: engine %d, %v; debugfs model %d, %v", p, whence, off, gotOff, err, wantOff, ok)
						}
						seeks++
					}
				}
			}
			for i, data := range testimg.DebugfsDumps(t, img, small) {
				in := all[small[i]]
				got := make([]byte, in.Size)
				n, err := e.ReadAt(in, got, 0)
				if err != nil && err != io.EOF || n != len(got) || !bytes.Equal(got, data) {
					t.Errorf("%s: ReadAt: %d bytes, %v; content equal to debugfs dump: %v", small[i], n, err, bytes.Equal(got, data))
				}
				dumped++
			}
		})
	}
	t.Logf("debugfs oracle: %d files, %d mappings, %d contents, %d seeks", files, mappings, dumped, seeks)
}
