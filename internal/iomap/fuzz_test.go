package iomap_test

import (
	"safefs/internal/iomap/abi"

	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"safefs/internal/ext4"
	"safefs/internal/iomap"
	"safefs/internal/testimg"
)

// Fuzz bases are small images held in memory, without metadata checksums
// so that mutations reach the mapping code instead of stopping at a
// checksum: an extent-mapped one (with an extent index level and unwritten
// extents), an inline-data one, and a block-mapped ext2 one whose "deep"
// file reaches the triple-indirect tree.
type fuzzBase struct {
	name  string
	img   []byte
	files []string // regular files to map, by name at the root
}

var (
	fuzzOnce  sync.Once
	fuzzBases []fuzzBase
	fuzzErr   error
)

func fuzzImages(tb testing.TB) []fuzzBase {
	tb.Helper()
	fuzzOnce.Do(func() { fuzzBases, fuzzErr = buildFuzzBases() })
	if fuzzErr != nil {
		if errors.Is(fuzzErr, errNoTool) {
			tb.Skip(fuzzErr)
		}
		tb.Fatal(fuzzErr)
	}
	return fuzzBases
}

var errNoTool = errors.New("e2fsprogs tool missing")

func buildFuzzBases() ([]fuzzBase, error) {
	for _, tool := range []string{"mkfs.ext4", "debugfs"} {
		if _, err := testimg.FindTool(tool); err != nil {
			return nil, fmt.Errorf("%w: %v", errNoTool, err)
		}
	}
	dir, err := os.MkdirTemp("", "iomap-fuzz-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	src := filepath.Join(dir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(src, "small"), []byte("hello, world\n"), 0o644); err != nil {
		return nil, err
	}
	sparse := func(name string, offs ...int64) error {
		f, err := os.Create(filepath.Join(src, name))
		if err != nil {
			return err
		}
		defer f.Close()
		for i, off := range offs {
			if _, err := f.WriteAt(testimg.LayoutData(uint64(i)+7, 1024), off); err != nil {
				return err
			}
		}
		return f.Close()
	}
	// Ten pieces: more extents than i_block holds, so an index level.
	var pieces []int64
	for i := int64(0); i < 10; i++ {
		pieces = append(pieces, i*4096)
	}
	if err := sparse("frag", pieces...); err != nil {
		return nil, err
	}
	// Direct, indirect, double and triple indirect blocks (1 KiB blocks:
	// 12, 12+256, 12+256+65536).
	if err := sparse("deep", 0, 20<<10, 300<<10, 70<<20); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "mke2fs.conf")
	if err := os.WriteFile(conf, []byte(testimg.MkfsConfig), 0o644); err != nil {
		return nil, err
	}
	var bases []fuzzBase
	for _, b := range []struct {
		name, typ, features string
		debugfs             []string
		files               []string
	}{
		{"extents", "ext4", "^metadata_csum,^has_journal", []string{"fallocate /frag 2 3", "fallocate /frag 9 10"}, []string{"frag", "small", "deep"}},
		{"inline", "ext4", "inline_data,^metadata_csum,^has_journal", nil, []string{"small", "frag"}},
		{"blockmap", "ext2", "^dir_index", nil, []string{"deep", "frag", "small"}},
	} {
		img := filepath.Join(dir, b.name+".img")
		if err := testimg.RunE2fsprogs(dir, conf, "mkfs.ext4", "-q", "-F", "-t", b.typ, "-b", "1024", "-I", "256", "-N", "64", "-O", b.features,
			"-U", testimg.UUID, "-E", "hash_seed="+testimg.HashSeed, "-d", src, img, "2M"); err != nil {
			return nil, err
		}
		if len(b.debugfs) > 0 {
			cmds := filepath.Join(dir, "cmds")
			if err := os.WriteFile(cmds, []byte(strings.Join(b.debugfs, "\n")+"\n"), 0o644); err != nil {
				return nil, err
			}
			if err := testimg.RunE2fsprogs(dir, conf, "debugfs", "-w", "-f", cmds, img); err != nil {
				return nil, err
			}
		}
		data, err := os.ReadFile(img)
		if err != nil {
			return nil, err
		}
		bases = append(bases, fuzzBase{b.name, data, b.files})
	}
	return bases, nil
}

// openBytes opens an in-memory image.
func openBytes(img []byte) (*ext4.FS, *iomap.Engine, error) {
	r := bytes.NewReader(img)
	fsys, err := ext4.Open(r, &ext4.Options{DeviceSize: int64(len(img)), NoRecovery: true})
	if err != nil {
		return nil, nil, err
	}
	return fsys, iomap.New(fsys, r), nil
}

// inodeRegion locates inode ino in img.
func inodeRegion(fsys *ext4.FS, ino uint32) (off, n int, ok bool) {
	sb := fsys.Superblock()
	gd, err := fsys.GroupDesc((ino - 1) / sb.InodesPerGroup)
	if err != nil {
		return 0, 0, false
	}
	idx := (ino - 1) % sb.InodesPerGroup
	return int(gd.InodeTable)*int(fsys.BlockSize()) + int(idx)*int(sb.InodeSize), int(sb.InodeSize), true
}

// mapBlockRegion locates the first mapping metadata block of in: the
// child of an extent root with an index level, or the first indirect
// block of a block map.
func mapBlockRegion(fsys *ext4.FS, in *ext4.Inode) (off, n int, ok bool) {
	le := binary.LittleEndian
	var blk uint64
	switch {
	case in.HasInlineData():
		return 0, 0, false
	case in.Flags&ext4.FlagExtents != 0:
		if le.Uint16(in.Block[6:]) == 0 {
			return 0, 0, false
		}
		blk = uint64(le.Uint32(in.Block[16:])) | uint64(le.Uint16(in.Block[20:]))<<32
	default:
		for i := 12; i < 15 && blk == 0; i++ {
			blk = uint64(le.Uint32(in.Block[4*i:]))
		}
	}
	bs := int(fsys.BlockSize())
	return int(blk) * bs, bs, blk != 0
}

// fuzzRegion returns where input selector sel of base b writes: the inode
// or the first mapping block of one of its files.
func fuzzRegion(b fuzzBase, sel byte) (ino uint32, off, n int, ok bool) {
	fsys, _, err := openBytes(b.img)
	if err != nil {
		return 0, 0, 0, false
	}
	name := b.files[int(sel)%len(b.files)]
	root, err := fsys.Inode(2)
	if err != nil {
		return 0, 0, 0, false
	}
	ino, _, err = fsys.Lookup(root, []byte(name))
	if err != nil {
		return 0, 0, 0, false
	}
	in, err := fsys.Inode(ino)
	if err != nil {
		return 0, 0, 0, false
	}
	if int(sel)/len(b.files)%2 == 0 {
		off, n, ok = inodeRegion(fsys, ino)
	} else {
		off, n, ok = mapBlockRegion(fsys, in)
	}
	return ino, off, n, ok
}

// checkErr requires an error from the engine to be one it documents:
// corruption, a device read failure, or a position it refuses.
func checkErr(t *testing.T, what string, err error) {
	var ce *ext4.CorruptError
	var ie *ext4.IOError
	if err != nil && !errors.As(err, &ce) && !errors.As(err, &ie) && !errors.Is(err, iomap.ErrOffset) {
		t.Fatalf("%s: unexpected error %T: %v", what, err, err)
	}
}

// exercise runs the engine over file ino of img and checks that every
// answer is one the kernel would accept, or a documented error.
func exercise(t *testing.T, img []byte, ino uint32, seed uint64) {
	fsys, e, err := openBytes(img)
	if err != nil {
		return
	}
	in, err := fsys.Inode(ino)
	if err != nil {
		return
	}
	if !in.IsRegular() {
		if _, err := e.Map(in, 0, 1); !errors.Is(err, iomap.ErrNotRegular) {
			t.Fatalf("Map of a non-regular inode: %v", err)
		}
		return
	}
	bs := uint64(e.BlockSize())
	near := seed % (in.Size + 4*bs)
	for _, pos := range []uint64{0, near, seed & (1<<63 - 1)} {
		for _, count := range []uint64{0, 1, bs, seed >> 40, ^uint64(0)} {
			m, err := e.Map(in, pos, count)
			checkErr(t, fmt.Sprintf("Map(%d, %d)", pos, count), err)
			if err != nil {
				continue
			}
			if err := checkMapping(e.BlockSize(), m, pos, count); err != nil {
				t.Fatalf("Map(%d, %d) = %v: %v", pos, count, m, err)
			}
		}
	}
	// A walk over the start of the file: each mapping picks up where the
	// last one ended.
	eof := roundUp(in.Size, bs)
	for i, pos := 0, uint64(0); i < 64 && pos < eof; i++ {
		m, err := e.Map(in, pos, eof-pos)
		checkErr(t, fmt.Sprintf("Map(%d)", pos), err)
		if err != nil {
			break
		}
		if err := checkMapping(e.BlockSize(), m, pos, eof-pos); err != nil || m.Offset != pos || m.End() > eof {
			t.Fatalf("walk: Map(%d) = %v: %v (end of file %d)", pos, m, err, eof)
		}
		pos = m.End()
	}
	for _, whence := range []int{iomap.SeekData, iomap.SeekHole} {
		got, err := e.Seek(in, near, whence)
		if errors.Is(err, iomap.ErrNoData) {
			continue
		}
		checkErr(t, "Seek", err)
		if err == nil && (got < near || got > in.Size || whence == iomap.SeekData && got == in.Size) {
			t.Fatalf("Seek(%d, %d) = %d with size %d", near, whence, got, in.Size)
		}
	}
	// The engine's reader and internal/ext4's must agree whenever both
	// succeed.
	a, b := make([]byte, 3000), make([]byte, 3000)
	na, ea := e.ReadAt(in, a, int64(near))
	checkErr(t, "ReadAt", func() error {
		if ea == io.EOF {
			return nil
		}
		return ea
	}())
	nb, eb := fsys.ReadAt(in, b, int64(near))
	if (ea == nil || ea == io.EOF) && (eb == nil || eb == io.EOF) && (na != nb || ea != eb || !bytes.Equal(a[:na], b[:nb])) {
		t.Fatalf("ReadAt(%d): engine %d, %v; ext4 %d, %v", near, na, ea, nb, eb)
	}
}

// FuzzMap replaces the inode or the first extent-tree / indirect block of
// a file of a small base image with the input and maps the file: Map must
// never panic, must return only corruption, I/O or range errors, and every
// mapping it returns must pass the kernel's FUSE_IOMAP_BEGIN checks for a
// read at that position (and start at its block); Seek must stay within
// the file and ReadAt must agree with internal/ext4's reader. Input: byte
// 0 picks the base, byte 1 the file and region, bytes 2..9 a position, the
// rest replaces the region.
func FuzzMap(f *testing.F) {
	bases := fuzzImages(f)
	for i, b := range bases {
		for sel := 0; sel < 2*len(b.files); sel++ {
			if _, off, n, ok := fuzzRegion(b, byte(sel)); ok {
				seed := binary.LittleEndian.AppendUint64([]byte{byte(i), byte(sel)}, uint64(sel)*5000)
				f.Add(append(seed, b.img[off:off+n]...))
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 10 {
			return
		}
		b := bases[int(data[0])%len(bases)]
		ino, off, n, ok := fuzzRegion(b, data[1])
		if !ok {
			return
		}
		img := bytes.Clone(b.img)
		copy(img[off:off+n], data[10:])
		exercise(t, img, ino, binary.LittleEndian.Uint64(data[2:]))
	})
}

// TestFuzzBases checks that the fuzz bases have what FuzzMap mutates: an
// extent index block, indirect blocks, inline data and unwritten extents,
// and that the unmutated bases pass exercise.
func TestFuzzBases(t *testing.T) {
	bases := fuzzImages(t)
	var regions, unwritten, inline int
	for _, b := range bases {
		fsys, e, err := openBytes(b.img)
		if err != nil {
			t.Fatalf("%s: %v", b.name, err)
		}
		for sel := 0; sel < 2*len(b.files); sel++ {
			ino, _, _, ok := fuzzRegion(b, byte(sel))
			if !ok {
				continue
			}
			regions++
			for _, seed := range []uint64{0, 1, 4095, 70 << 20, 1 << 62} {
				exercise(t, b.img, ino, seed)
			}
			in, _ := fsys.Inode(ino)
			segs, err := engineWalk(e, in)
			if err != nil {
				t.Errorf("%s inode %d: %v", b.name, ino, err)
			}
			for _, s := range segs {
				switch s.typ {
				case abi.TypeUnwritten:
					unwritten++
				case abi.TypeInline:
					inline++
				}
			}
		}
	}
	t.Logf("fuzz bases: %d regions, %d unwritten and %d inline mappings", regions, unwritten, inline)
	if regions < 10 || unwritten == 0 || inline == 0 {
		t.Errorf("fuzz bases: %d regions, %d unwritten and %d inline mappings", regions, unwritten, inline)
	}
}
