package iomap

import (
	"safefs/internal/iomap/abi"

	"fmt"
	"io"
	"syscall"

	"safefs/internal/ext4"
)

// Errors of the engine. Each wraps the errno a FUSE server answers with,
// so errors.Is(err, syscall.ENXIO) and the like work.
var (
	// ErrNoData is Seek's answer when there is no data (SEEK_DATA) or the
	// offset is at or past the end of file (both whences), as lseek(2).
	ErrNoData = fmt.Errorf("iomap: no data at or after the offset: %w", syscall.ENXIO)
	// ErrNotRegular is returned for inodes that are not regular files:
	// only those have mappings the kernel may use.
	ErrNotRegular = fmt.Errorf("iomap: not a regular file: %w", syscall.EINVAL)
	// ErrWhence is returned by Seek for a whence other than SeekData and
	// SeekHole (the kernel handles the others itself).
	ErrWhence = fmt.Errorf("iomap: unsupported whence: %w", syscall.EINVAL)
	// ErrOffset is returned for a position beyond MaxLFSFileSize, which no
	// kernel request can carry.
	ErrOffset = fmt.Errorf("iomap: offset beyond the largest file offset: %w", syscall.EINVAL)
	// ErrReadOnly is returned by Begin for operations that would change
	// the file.
	ErrReadOnly = fmt.Errorf("iomap: the filesystem is read-only: %w", syscall.EROFS)
)

// Whences Seek answers (Linux values of SEEK_DATA and SEEK_HOLE).
const (
	SeekData = 3
	SeekHole = 4
)

// maxMergeRuns bounds the on-disk runs Map merges into one mapping, so
// that one request costs bounded work even on a hostile image (say, every
// pointer of a triple-indirect tree naming the same all-zero block: each
// pointer block is a separate run). A shorter mapping is still correct:
// the kernel asks again from where it ends.
const maxMergeRuns = 1024

// Mapping says where one block-aligned range of a file lives.
type Mapping struct {
	// Offset and Length are the file byte range: multiples of the block
	// size, Length > 0.
	Offset, Length uint64
	// Addr is the device byte offset of Offset for TypeMapped and
	// TypeUnwritten, NullAddr for every other type.
	Addr uint64
	// Type is TypeMapped, TypeUnwritten, TypeHole or TypeInline.
	Type uint16
}

// End returns the first byte after the mapping. It cannot overflow: the
// engine never maps past MaxLFSFileSize+1.
func (m Mapping) End() uint64 { return m.Offset + m.Length }

// String formats the mapping for logs and test failures.
func (m Mapping) String() string {
	if m.Addr == abi.NullAddr {
		return fmt.Sprintf("%s [%d, %d)", abi.TypeName(m.Type), m.Offset, m.End())
	}
	return fmt.Sprintf("%s [%d, %d) at %d", abi.TypeName(m.Type), m.Offset, m.End(), m.Addr)
}

// IO returns the wire form of the mapping, on device dev (the cookie of
// the registered block device; it is used only for mappings with an
// address).
func (m Mapping) IO(dev uint32) abi.IomapIO {
	x := abi.IomapIO{Offset: m.Offset, Length: m.Length, Addr: m.Addr, Type: m.Type}
	if m.Type == abi.TypeMapped || m.Type == abi.TypeUnwritten {
		x.Dev = dev
	} else {
		x.Addr = abi.NullAddr
	}
	return x
}

// Reply returns a FUSE_IOMAP_BEGIN reply for a read-only server: the
// mapping to read through, and PURE_OVERWRITE over the same range in the
// write slot (which must also cover the position asked for, and which a
// read never uses).
func (m Mapping) Reply(dev uint32) abi.BeginOut {
	return abi.ReadOnlyReply(m.IO(dev))
}

// Engine maps file ranges of one filesystem to its device. It keeps no
// state of its own beyond the geometry (the ext4 caches hold the
// metadata), so it is safe for concurrent use.
type Engine struct {
	fsys  *ext4.FS
	dev   io.ReaderAt
	bs    uint64 // block size
	shift uint   // log2(bs)
	// first and blocks bound the device blocks that can hold file data:
	// from the first data block to the filesystem size, capped so that
	// every device byte address fits in an int64.
	first, blocks uint64
}

// New returns an engine for fsys, whose device dev is the one ext4 reads
// (ReadAt reads file data from it).
func New(fsys *ext4.FS, dev io.ReaderAt) *Engine {
	bs := uint64(fsys.BlockSize())
	shift := uint(0)
	for uint64(1)<<shift < bs {
		shift++
	}
	sb := fsys.Superblock()
	return &Engine{
		fsys:   fsys,
		dev:    dev,
		bs:     bs,
		shift:  shift,
		first:  uint64(sb.FirstDataBlock),
		blocks: min(sb.BlocksCount, uint64(1<<63-1)>>shift),
	}
}

// BlockSize returns the filesystem block size, to which every mapping is
// aligned.
func (e *Engine) BlockSize() uint32 { return uint32(e.bs) }

// corrupt returns the ext4 error for an inconsistent run of in.
func corrupt(in *ext4.Inode, blk uint64, format string, args ...any) error {
	kind := ext4.BadBlockMap
	if in.Flags&ext4.FlagExtents != 0 {
		kind = ext4.BadExtentTree
	}
	return &ext4.CorruptError{Kind: kind, Ino: in.Ino, Block: blk, Group: -1, Detail: fmt.Sprintf(format, args...)}
}

// eofBlocks returns the number of blocks up to the end of file (the size
// rounded up to a block).
func (e *Engine) eofBlocks(in *ext4.Inode) (uint64, error) {
	if in.Size > abi.MaxLFSFileSize {
		// ext4.Inode refuses this already, as the kernel's ext4_iget
		// does; an Inode built elsewhere must not overflow the engine.
		return 0, &ext4.CorruptError{Kind: ext4.BadInode, Ino: in.Ino, Group: -1, Detail: fmt.Sprintf("size %d is negative", int64(in.Size))}
	}
	n := in.Size >> e.shift
	if in.Size&(e.bs-1) != 0 {
		n++
	}
	return n, nil
}

// span is a run of blocks [start, end) of one type; phys is the device
// block of start for TypeMapped and TypeUnwritten.
type span struct {
	start, end, phys uint64
	typ              uint16
}

// run looks up the on-disk run holding block lblk (< eof) and clips it to
// eof, checking every value ext4 returns: the run must start at lblk, be
// non-empty, and lie within the filesystem.
func (e *Engine) run(in *ext4.Inode, lblk, eof uint64) (span, error) {
	ext, err := e.fsys.MapBlock(in, lblk)
	if err != nil {
		return span{}, err
	}
	if ext.Logical != lblk || ext.Len == 0 {
		return span{}, corrupt(in, 0, "block %d maps to a run of %d blocks starting at %d", lblk, ext.Len, ext.Logical)
	}
	s := span{start: lblk, end: eof}
	if ext.Len < eof-lblk {
		s.end = lblk + ext.Len
	}
	switch ext.Kind {
	case ext4.Hole:
		s.typ = abi.TypeHole
		return s, nil
	case ext4.Mapped:
		s.typ = abi.TypeMapped
	case ext4.Unwritten:
		s.typ = abi.TypeUnwritten
	default:
		return span{}, corrupt(in, 0, "block %d has backing of kind %s in a file without inline data", lblk, ext.Kind)
	}
	if n := s.end - s.start; ext.Physical < e.first || ext.Physical > e.blocks || n > e.blocks-ext.Physical {
		return span{}, corrupt(in, ext.Physical, "blocks %d..%d map outside the filesystem (%d blocks)", lblk, s.end-1, e.blocks)
	}
	s.phys = ext.Physical
	return s, nil
}

// mapping turns a span into a Mapping.
func (e *Engine) mapping(s span) Mapping {
	m := Mapping{Offset: s.start << e.shift, Length: (s.end - s.start) << e.shift, Addr: abi.NullAddr, Type: s.typ}
	if s.typ == abi.TypeMapped || s.typ == abi.TypeUnwritten {
		m.Addr = s.phys << e.shift
	}
	return m
}

// Map returns the mapping of regular file in that contains byte pos, for
// a request of count bytes from pos (count 0 is taken as 1).
//
// The mapping starts at pos rounded down to a block. It is built from
// ext4's runs (MapBlock): the run holding pos is returned whole (clipped
// to the end of file rounded up to a block), and the following runs are
// merged into it while they are of the same type and, for MAPPED and
// UNWRITTEN, physically contiguous, until the mapping reaches pos+count
// rounded up to a block (or maxMergeRuns runs). From the end of file
// rounded up to a block on, a file is a HOLE, reaching to pos+count
// rounded up. An inline-data file is one INLINE mapping of the first block
// (inline data always fits in it: it lives in the inode); the rest of a
// larger i_size is a HOLE, which is how it reads.
//
// Corrupt on-disk data gives an *ext4.CorruptError, never a panic, and no
// mapping ever reaches past the filesystem or past MaxLFSFileSize+1.
func (e *Engine) Map(in *ext4.Inode, pos, count uint64) (Mapping, error) {
	m, _, err := e.mapAt(in, pos, count, span{})
	return m, err
}

// mapAt is Map for callers that walk a file mapping after mapping
// (ReadAt, Seek): it also returns the run that ended the merging when it
// was looked up (the next mapping's first run; empty otherwise), and takes
// such a run back as hint, so that a walk looks each run up once.
func (e *Engine) mapAt(in *ext4.Inode, pos, count uint64, hint span) (Mapping, span, error) {
	if !in.IsRegular() {
		return Mapping{}, span{}, ErrNotRegular
	}
	if pos > abi.MaxLFSFileSize {
		return Mapping{}, span{}, ErrOffset
	}
	lblk := pos >> e.shift
	// want is the first block the request does not need.
	last := abi.MaxLFSFileSize
	if count > 0 && count-1 <= abi.MaxLFSFileSize-pos {
		last = pos + count - 1
	} else if count == 0 {
		last = pos
	}
	want := last>>e.shift + 1
	eof, err := e.eofBlocks(in)
	if err != nil {
		return Mapping{}, span{}, err
	}
	if lblk >= eof {
		return e.mapping(span{start: lblk, end: want, typ: abi.TypeHole}), span{}, nil
	}
	if in.HasInlineData() {
		if lblk == 0 {
			return Mapping{Offset: 0, Length: e.bs, Addr: abi.NullAddr, Type: abi.TypeInline}, span{}, nil
		}
		return e.mapping(span{start: lblk, end: eof, typ: abi.TypeHole}), span{}, nil
	}
	s := hint
	if s.start != lblk || s.end <= s.start || s.end > eof {
		if s, err = e.run(in, lblk, eof); err != nil {
			return Mapping{}, span{}, err
		}
	}
	for runs := 1; s.end < eof && s.end < want && runs < maxMergeRuns; runs++ {
		r, err := e.run(in, s.end, eof)
		if err != nil {
			return Mapping{}, span{}, err
		}
		if r.typ != s.typ || r.typ != abi.TypeHole && r.phys != s.phys+(s.end-s.start) {
			return e.mapping(s), r, nil
		}
		s.end = r.end
	}
	return e.mapping(s), span{}, nil
}

// Begin answers a FUSE_IOMAP_BEGIN request for regular file in (the inode
// the caller found from req.AttrIno) on a read-only filesystem whose
// device has cookie dev: operations that would change the file are
// refused with ErrReadOnly; the others get the mapping containing req.Pos
// and PURE_OVERWRITE in the write slot.
func (e *Engine) Begin(in *ext4.Inode, req abi.BeginIn, dev uint32) (abi.BeginOut, error) {
	if req.OpFlags&abi.OpWriteMask != 0 {
		return abi.BeginOut{}, ErrReadOnly
	}
	m, err := e.Map(in, req.Pos, req.Count)
	if err != nil {
		return abi.BeginOut{}, err
	}
	return m.Reply(dev), nil
}

// ReadAt reads file data of regular file in at byte offset off, for the
// classic FUSE READ path, as read(2) on the kernel's ext4 mount would:
// holes and unwritten ranges read as zeros, inline data comes from the
// inode, and reads stop at the file size with io.EOF. Each mapped range
// is read with one device read per merged mapping. On an error the count
// says how much of p was filled; a FUSE server should answer with the
// error rather than a short read, which the kernel would take for the end
// of a cached file.
func (e *Engine) ReadAt(in *ext4.Inode, p []byte, off int64) (int, error) {
	if !in.IsRegular() {
		return 0, ErrNotRegular
	}
	if off < 0 {
		return 0, ErrOffset
	}
	if uint64(off) >= in.Size {
		return 0, io.EOF
	}
	if in.HasInlineData() {
		// internal/ext4 keeps the inline-data reader to itself; its
		// ReadAt has the same semantics (zeros past the inline area).
		return e.fsys.ReadAt(in, p, off)
	}
	n := len(p)
	var eof error
	if rest := in.Size - uint64(off); uint64(n) > rest {
		n = int(rest)
		eof = io.EOF
	}
	done := 0
	var next span
	for done < n {
		pos := uint64(off) + uint64(done)
		m, nx, err := e.mapAt(in, pos, uint64(n-done), next)
		next = nx
		if err != nil {
			return done, err
		}
		chunk := min(m.End()-pos, uint64(n-done))
		dst := p[done : done+int(chunk)]
		if m.Type == abi.TypeMapped {
			if err := e.readDev(dst, m.Addr+(pos-m.Offset)); err != nil {
				return done, err
			}
		} else {
			clear(dst)
		}
		done += int(chunk)
	}
	return done, eof
}

// readDev fills p from the device at byte offset addr; a short read is an
// error, as in internal/ext4.
func (e *Engine) readDev(p []byte, addr uint64) error {
	got, err := e.dev.ReadAt(p, int64(addr))
	if got == len(p) {
		return nil
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return &ext4.IOError{Off: int64(addr), Len: int64(len(p)), Err: err}
}

// SeekSteps bounds the mappings one Seek goes through. No real file comes
// near it, but a hostile block map can make each of a file's 2^30 blocks
// a mapping of its own (every pointer naming the same device block), and
// going through them all would hold the request for most of an hour.
const SeekSteps = 1 << 20

// Seek answers lseek(2) with SEEK_DATA or SEEK_HOLE on regular file in
// from offset off, as the kernel's ext4 answers on a read-only mount for a
// file with nothing in its page cache: mapped ranges are data; holes and
// unwritten extents are holes; an inline-data file is data from 0 to its
// size; the end of file is a hole. An offset at or past the size gives
// ErrNoData (ENXIO) for both whences, and so does SEEK_DATA with no data
// after off.
//
// (ext4 also looks at the page cache over unwritten extents and counts
// uptodate pages as data, so once a program has read the zeros of an
// unwritten range, the kernel's own mount calls that range data. A FUSE
// server sees no page cache; the cold-cache answer is the one that does
// not depend on who read what.)
//
// A search goes through at most SeekSteps mappings: past that, SEEK_DATA
// answers where it stands and SEEK_HOLE the end of the file, as lseek
// allows a filesystem to treat any part of a file as data.
func (e *Engine) Seek(in *ext4.Inode, off uint64, whence int) (uint64, error) {
	if whence != SeekData && whence != SeekHole {
		return 0, ErrWhence
	}
	if !in.IsRegular() {
		return 0, ErrNotRegular
	}
	wantData := whence == SeekData
	size := in.Size
	if off >= size {
		return 0, ErrNoData
	}
	if in.HasInlineData() {
		if wantData {
			return off, nil
		}
		return size, nil
	}
	// Every step moves past one mapping, at least one block.
	var next span
	for pos, steps := off, 0; pos < size; steps++ {
		if steps == SeekSteps {
			if wantData {
				return pos, nil
			}
			return size, nil
		}
		m, nx, err := e.mapAt(in, pos, size-pos, next)
		next = nx
		if err != nil {
			return 0, err
		}
		if (m.Type == abi.TypeMapped) == wantData {
			return pos, nil
		}
		pos = m.End()
	}
	if wantData {
		return 0, ErrNoData
	}
	return size, nil
}
