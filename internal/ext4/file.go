package ext4

import (
	"bytes"
	"io"
)

// ReadAt reads file data of a regular file (or any inode with data) at
// byte offset off, as read(2) on the kernel's mount would: holes and
// unwritten extents read as zeros, inline data comes from the inode, and
// reads stop at the file size with io.EOF. Each mapped extent is read from
// the device in one call.
func (fs *FS) ReadAt(in *Inode, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, &IOError{Off: off, Len: int64(len(p)), Err: io.ErrUnexpectedEOF}
	}
	if uint64(off) >= in.Size {
		return 0, io.EOF
	}
	n := len(p)
	var eof error
	if rest := in.Size - uint64(off); uint64(n) > rest {
		n = int(rest)
		eof = io.EOF
	}
	got, err := fs.readData(in, p[:n], uint64(off))
	if err != nil {
		return got, err
	}
	return got, eof
}

// readData fills p from the file's data at off; the caller has clipped
// the range to the file size.
func (fs *FS) readData(in *Inode, p []byte, off uint64) (int, error) {
	if in.HasInlineData() {
		data, err := fs.inlineData(in)
		if err != nil {
			return 0, err
		}
		// Past the inline area, up to i_size, the kernel's page reads
		// zero-fill.
		clear(p)
		if off < uint64(len(data)) {
			copy(p, data[off:])
		}
		return len(p), nil
	}
	bs := uint64(fs.blockSize)
	done := 0
	for done < len(p) {
		pos := off + uint64(done)
		ext, err := fs.MapBlock(in, pos>>fs.blockShift)
		if err != nil {
			return done, err
		}
		// Bytes of this extent from pos on, without overflowing for the
		// huge lengths holes may have.
		extEnd := ^uint64(0)
		if ext.Len < (^uint64(0)>>fs.blockShift)-ext.Logical {
			extEnd = (ext.Logical + ext.Len) << fs.blockShift
		}
		chunk := uint64(len(p) - done)
		if extEnd-pos < chunk {
			chunk = extEnd - pos
		}
		dst := p[done : done+int(chunk)]
		if ext.Kind == Mapped {
			dev := ext.Physical*bs + pos%bs
			if err := fs.readAt(dst, int64(dev)); err != nil {
				return done, err
			}
		} else {
			clear(dst)
		}
		done += int(chunk)
	}
	return done, nil
}

// Readlink returns the target of a symbolic link: from the inline data,
// from i_block for a fast symlink, or from its first data block.
func (fs *FS) Readlink(in *Inode) ([]byte, error) {
	if !in.IsSymlink() {
		return nil, corruptf(BadSymlink, in.Ino, 0, "not a symbolic link")
	}
	if in.Flags&(FlagImmutable|FlagAppend) != 0 {
		return nil, corruptf(BadSymlink, in.Ino, 0, "immutable or append flag on a symlink")
	}
	var target []byte
	switch {
	case in.HasInlineData():
		data, err := fs.inlineData(in)
		if err != nil {
			return nil, err
		}
		target = data[:min(uint64(len(data)), in.Size)]
	case fs.isFastSymlink(in):
		if in.Size == 0 || in.Size >= inlineBlockSize || bytes.IndexByte(in.Block[:in.Size+1], 0) != int(in.Size) {
			return nil, corruptf(BadSymlink, in.Ino, 0, "invalid fast symlink length %d", in.Size)
		}
		target = in.Block[:in.Size]
	default:
		ext, err := fs.MapBlock(in, 0)
		if err != nil {
			return nil, err
		}
		if ext.Kind != Mapped {
			return nil, corruptf(BadSymlink, in.Ino, 0, "symlink has no data block")
		}
		b, err := fs.readBlock(ext.Physical, in.Ino)
		if err != nil {
			return nil, err
		}
		// nd_terminate_link: the target ends at i_size, at most one byte
		// short of the block.
		target = b[:min(in.Size, uint64(len(b)-1))]
	}
	if i := bytes.IndexByte(target, 0); i >= 0 {
		target = target[:i]
	}
	if len(target) == 0 {
		return nil, corruptf(BadSymlink, in.Ino, 0, "empty symlink target")
	}
	return append([]byte(nil), target...), nil
}

// isFastSymlink follows ext4_inode_is_fast_symlink: without ea_inode, a
// symlink with no blocks other than its xattr block; with ea_inode (whose
// values may be charged to i_blocks), any symlink shorter than i_block.
func (fs *FS) isFastSymlink(in *Inode) bool {
	if !in.IsSymlink() {
		return false
	}
	if !fs.sb.HasIncompat(IncompatEAInode) {
		var eaBlocks uint64
		if in.FileACL != 0 {
			eaBlocks = uint64(fs.sb.ClusterSize()) >> 9
		}
		return !in.HasInlineData() && in.Blocks-eaBlocks == 0
	}
	return in.Size != 0 && in.Size < inlineBlockSize
}
