package ext4

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
)

// Options tune Open. The zero value is ready to use.
type Options struct {
	// DeviceSize is the size of the device in bytes; when positive, a
	// filesystem larger than the device is refused and no read goes past it.
	DeviceSize int64
	// NoRecovery opens a filesystem whose journal needs recovery without
	// replaying it (like the kernel's norecovery/noload): recent changes
	// may be missing and metadata may look inconsistent.
	NoRecovery bool
	// BlockCacheBytes bounds the metadata block cache (default 32 MiB).
	BlockCacheBytes int
	// InodeCacheEntries bounds the parsed-inode cache (default 65536),
	// counted in inodes of 256 bytes: a larger inode counts as several
	// (a 1 KiB inode as four), so the on-disk copies cached stay within
	// 256 bytes per entry (16 MiB by default) whatever the inode size.
	InodeCacheEntries int
	// Report, when set, receives corruption that was skipped over rather
	// than returned (a damaged directory block during ReadDir, a damaged
	// hash index that Lookup worked around), so that it can be logged.
	Report func(error)
}

// FS is an open ext2/3/4 filesystem. It is safe for concurrent use.
type FS struct {
	dev  io.ReaderAt
	sb   *Superblock
	opts Options

	blockSize    uint32
	blockShift   uint
	groupCount   uint32
	descPerBlock uint32
	csumSeed     uint32 // s_csum_seed: the base of every crc32c
	hashUnsigned bool   // htree hashes treat name bytes as unsigned

	blocks *lru[uint64, *block]
	inodes *lru[uint32, *Inode]
	groups *lru[uint32, *GroupDesc]

	statfsOnce sync.Once
	statfs     Statfs
	statfsErr  error
}

// Open reads and validates the superblock of the filesystem on dev. It
// reads nothing else: group descriptors, inodes and blocks are read when
// first needed.
func Open(dev io.ReaderAt, opts *Options) (*FS, error) {
	fs := &FS{dev: dev}
	if opts != nil {
		fs.opts = *opts
	}
	if fs.opts.BlockCacheBytes <= 0 {
		fs.opts.BlockCacheBytes = 32 << 20
	}
	if fs.opts.InodeCacheEntries <= 0 {
		fs.opts.InodeCacheEntries = 65536
	}
	tooSmall := formatf("the device is too small to hold an ext2/ext3/ext4 superblock")
	if fs.opts.DeviceSize > 0 && fs.opts.DeviceSize < SuperblockOffset+SuperblockSize {
		return nil, tooSmall
	}
	buf := make([]byte, SuperblockSize)
	if err := fs.readAt(buf, SuperblockOffset); err != nil {
		var ioe *IOError
		if errors.As(err, &ioe) && (errors.Is(ioe.Err, io.EOF) || errors.Is(ioe.Err, io.ErrUnexpectedEOF)) {
			return nil, tooSmall
		}
		return nil, err
	}
	sb, err := ParseSuperblock(buf, fs.opts.DeviceSize)
	if err != nil {
		return nil, err
	}
	if sb.NeedsRecovery() && !fs.opts.NoRecovery {
		return nil, ErrNeedsRecovery
	}
	fs.sb = sb
	fs.blockSize = sb.BlockSize()
	fs.blockShift = uint(10 + sb.LogBlockSize)
	fs.groupCount = uint32((sb.BlocksCount - uint64(sb.FirstDataBlock) + uint64(sb.BlocksPerGroup) - 1) / uint64(sb.BlocksPerGroup))
	fs.descPerBlock = fs.blockSize / uint32(sb.DescSize)
	if sb.HasIncompat(IncompatCsumSeed) {
		fs.csumSeed = sb.ChecksumSeed
	} else {
		fs.csumSeed = crc32c(^uint32(0), sb.UUID[:])
	}
	fs.hashUnsigned = sb.Flags&flagsUnsigned != 0
	fs.blocks = newLRU[uint64, *block](fs.opts.BlockCacheBytes)
	fs.inodes = newLRU[uint32, *Inode](fs.opts.InodeCacheEntries)
	fs.groups = newLRU[uint32, *GroupDesc](1 << 16)
	return fs, nil
}

// Superblock returns the parsed superblock. The caller must not modify it.
func (fs *FS) Superblock() *Superblock { return fs.sb }

// Device returns the reader the filesystem was opened on: file data is
// read from it directly (internal/iomap), at the addresses the mappings
// give.
func (fs *FS) Device() io.ReaderAt { return fs.dev }

// BlockSize returns the filesystem block size in bytes.
func (fs *FS) BlockSize() uint32 { return fs.blockSize }

// GroupCount returns the number of block groups.
func (fs *FS) GroupCount() uint32 { return fs.groupCount }

// readAt fills p from the device at off, turning short reads into errors.
func (fs *FS) readAt(p []byte, off int64) error {
	if off < 0 || fs.opts.DeviceSize > 0 && off+int64(len(p)) > fs.opts.DeviceSize {
		return &IOError{Off: off, Len: int64(len(p)), Err: io.ErrUnexpectedEOF}
	}
	n, err := fs.dev.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return &IOError{Off: off, Len: int64(len(p)), Err: err}
}

// validBlock reports whether pblk can hold file data or metadata at all.
func (fs *FS) validBlock(pblk uint64) bool {
	return pblk >= uint64(fs.sb.FirstDataBlock) && pblk < fs.sb.BlocksCount
}

// validRange reports whether the n blocks starting at pblk are all inside
// the filesystem.
func (fs *FS) validRange(pblk, n uint64) bool {
	return fs.validBlock(pblk) && n <= fs.sb.BlocksCount-pblk
}

// block is a cached metadata block. verifiedFor remembers, for these
// exact bytes, the inode whose extent-node checks (checksum, entry order)
// they passed, so that hot lookups skip the work; a block re-read from the
// device starts unverified, since a hostile device may answer differently.
type block struct {
	data        []byte
	verifiedFor atomic.Uint32
}

// readBlock returns the contents of physical block pblk through the
// metadata cache. The returned slice is shared and must not be modified.
// ino names the inode on whose behalf the block is read, for errors.
func (fs *FS) readBlock(pblk uint64, ino uint32) ([]byte, error) {
	b, err := fs.cachedBlock(pblk, ino)
	if err != nil {
		return nil, err
	}
	return b.data, nil
}

func (fs *FS) cachedBlock(pblk uint64, ino uint32) (*block, error) {
	if b, ok := fs.blocks.get(pblk, pblk); ok {
		return b, nil
	}
	if !fs.validBlock(pblk) {
		return nil, corruptf(BadBlockNumber, ino, pblk, "block %d is outside the filesystem (%d blocks)", pblk, fs.sb.BlocksCount)
	}
	b := &block{data: make([]byte, fs.blockSize)}
	if err := fs.readAt(b.data, int64(pblk)<<fs.blockShift); err != nil {
		return nil, err
	}
	fs.blocks.put(pblk, pblk, b, len(b.data))
	return b, nil
}
