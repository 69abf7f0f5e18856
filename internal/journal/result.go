package journal

import (
	"errors"
	"io"
	"sort"
	"sync"
)

// Block is one block the replay writes: the version of filesystem block
// Target that the kernel's recovery leaves on the device. Its contents are
// not copied into memory; they are journal block Source of the device, with
// the first four bytes restored to the jbd2 magic number when Escaped
// (jbd2 zeroes them in the log so that a block starting with the magic
// cannot pass for a log block).
type Block struct {
	Target  uint64 // filesystem block written
	Source  uint64 // device block (inside the journal) holding the data
	Escaped bool   // restore the jbd2 magic number in the first 4 bytes
	TID     uint32 // transaction whose version this is
}

// Result is what the kernel's journal recovery would write: each block once,
// in its last version, plus what the recovery saw on the way. A later
// writable safefs can replay it to the device by writing each block's data
// (ReadBlock) to its Target; Overlay serves it read-only.
type Result struct {
	// BlockSize is the filesystem's (and the journal's) block size.
	BlockSize uint32
	// Blocks holds one entry per filesystem block written, sorted by
	// Target. Writing them in any order gives the same device, since each
	// target appears once.
	Blocks []Block
	// FirstTID is the first transaction in the log (s_sequence); EndTID is
	// the first one not replayed. Transactions() is their difference.
	FirstTID, EndTID uint32
	// Replays counts block writes in log order, including versions a later
	// transaction overwrote (the kernel's nr_replays); Revokes counts the
	// revoke records in the replayed transactions; RevokeHits counts the
	// writes those records cancelled; Escaped counts writes of escaped
	// blocks.
	Replays, Revokes, RevokeHits, Escaped int
	// Journal is the journal superblock, zero when the filesystem did not
	// need recovery.
	Journal Superblock
}

// Transactions is the number of transactions replayed.
func (r *Result) Transactions() int { return int(r.EndTID - r.FirstTID) }

func (r *Result) sortBlocks() {
	sort.Slice(r.Blocks, func(a, b int) bool { return r.Blocks[a].Target < r.Blocks[b].Target })
}

// ReadBlock fills p (BlockSize bytes) with the data the replay writes for
// b, read from its place in the journal on dev.
func (r *Result) ReadBlock(dev io.ReaderAt, b Block, p []byte) error {
	if len(p) != int(r.BlockSize) {
		return errors.New("journal: ReadBlock needs a buffer of exactly one block")
	}
	if err := readFull(dev, p, int64(b.Source)*int64(r.BlockSize)); err != nil {
		return err
	}
	if b.Escaped {
		be.PutUint32(p, jbd2Magic)
	}
	return nil
}

// Overlay returns the device as the kernel leaves it after the replay: reads
// of replayed blocks return the replayed data, every other byte comes from
// dev. Reads may start and end anywhere. A nil or empty Result gives dev
// unchanged. The overlay is safe for concurrent use.
//
// Its superblock is the last journaled copy, which usually still has
// needs_recovery set (the kernel clears it after replaying): open ext4 on
// the overlay with ext4.Options.NoRecovery.
func (r *Result) Overlay(dev io.ReaderAt) *Overlay {
	o := &Overlay{dev: dev}
	if r != nil && len(r.Blocks) > 0 {
		o.res = r
		bs := int(r.BlockSize)
		o.pool.New = func() any { b := make([]byte, bs); return &b }
	}
	return o
}

// Overlay is an io.ReaderAt over a device with a Result's blocks in place.
type Overlay struct {
	dev  io.ReaderAt
	res  *Result
	pool sync.Pool
}

// ReadAt reads from the device, then replaces the parts of replayed blocks
// that fall within what was read. Like the device, it returns fewer bytes
// than asked only with an error; the replay never extends the device.
func (o *Overlay) ReadAt(p []byte, off int64) (int, error) {
	n, err := o.dev.ReadAt(p, off)
	if o.res == nil || n <= 0 || off < 0 {
		return n, err
	}
	bs := int64(o.res.BlockSize)
	end := off + int64(n)
	blocks := o.res.Blocks
	i := sort.Search(len(blocks), func(i int) bool { return blocks[i].Target >= uint64(off/bs) })
	for ; i < len(blocks); i++ {
		b := blocks[i]
		start := int64(b.Target) * bs
		if start >= end {
			break
		}
		lo, hi := max(off, start), min(end, start+bs)
		if lo == start && hi == start+bs {
			// The whole block is wanted: read it in place.
			if rerr := o.res.ReadBlock(o.dev, b, p[lo-off:hi-off]); rerr != nil {
				return int(lo - off), rerr
			}
			continue
		}
		bufp := o.pool.Get().(*[]byte)
		rerr := o.res.ReadBlock(o.dev, b, *bufp)
		if rerr == nil {
			copy(p[lo-off:hi-off], (*bufp)[lo-start:hi-start])
		}
		o.pool.Put(bufp)
		if rerr != nil {
			return int(lo - off), rerr
		}
	}
	return n, err
}
