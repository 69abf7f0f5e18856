package ext4

// ExtentKind says what backs a range of a file.
type ExtentKind uint8

// Kinds of file ranges.
const (
	// Mapped ranges are stored in device blocks starting at Physical.
	Mapped ExtentKind = iota + 1
	// Hole ranges have no storage and read as zeros.
	Hole
	// Unwritten ranges are allocated (fallocate) but read as zeros.
	Unwritten
	// Inline ranges live inside the inode (inline_data); Physical is
	// meaningless.
	Inline
)

// String names the kind.
func (k ExtentKind) String() string {
	switch k {
	case Mapped:
		return "mapped"
	case Hole:
		return "hole"
	case Unwritten:
		return "unwritten"
	case Inline:
		return "inline"
	}
	return "invalid"
}

// Extent is a run of logical blocks of a file with one kind of backing.
type Extent struct {
	Logical  uint64 // first logical block
	Physical uint64 // first device block (Mapped and Unwritten only)
	Len      uint64 // number of blocks, at least 1
	Kind     ExtentKind
}

// MapBlock returns the run of blocks containing logical block lblk of a
// regular file, directory or slow symlink. The run is as long as the
// on-disk structure says (an extent, a contiguous stretch of an indirect
// block, or a hole up to the next mapped block); callers clip it to the
// file size. Inline-data inodes return one Inline extent.
func (fs *FS) MapBlock(in *Inode, lblk uint64) (Extent, error) {
	switch {
	case in.HasInlineData():
		return Extent{Logical: 0, Len: 1, Kind: Inline}, nil
	case in.Flags&FlagExtents != 0:
		return fs.extentMapBlock(in, lblk)
	case fs.sb.HasRoCompat(RoCompatBigalloc):
		return Extent{}, corruptf(BadBlockMap, in.Ino, 0, "block-mapped inode on a bigalloc filesystem")
	default:
		return fs.blockMapBlock(in, lblk)
	}
}
