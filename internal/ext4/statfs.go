package ext4

import "sort"

// Statfs holds the numbers statfs(2) reports, computed as ext4_statfs does.
type Statfs struct {
	BlockSize   uint32
	Blocks      uint64 // total blocks less the metadata overhead
	BlocksFree  uint64
	BlocksAvail uint64 // free blocks less the reserved ones
	Files       uint64
	FilesFree   uint64
	NameLen     uint32
	Fsid        uint64 // folded from the UUID as uuid_to_fsid does
}

// nameLenMax is EXT4_NAME_LEN.
const nameLenMax = 255

// Statfs returns filesystem-wide counts. The first call sums the free
// counts of all group descriptors, as the kernel does at mount time; later
// calls return the same numbers (the filesystem is read-only).
func (fs *FS) Statfs() (Statfs, error) {
	fs.statfsOnce.Do(func() { fs.statfs, fs.statfsErr = fs.computeStatfs() })
	return fs.statfs, fs.statfsErr
}

func (fs *FS) computeStatfs() (Statfs, error) {
	sb := fs.sb
	var freeClusters, freeInodes uint64
	for g := uint32(0); g < fs.groupCount; g++ {
		gd, err := fs.GroupDesc(g)
		if err != nil {
			// One bad descriptor should not make df fail; the kernel
			// would have refused the mount, we count it as full.
			continue
		}
		freeClusters += uint64(gd.FreeBlocksCount)
		freeInodes += uint64(gd.FreeInodesCount)
	}
	ratio := uint64(1) << (sb.LogClusterSize - sb.LogBlockSize)
	overhead, err := fs.overheadClusters()
	if err != nil {
		return Statfs{}, err
	}
	var resv uint64
	if sb.HasIncompat(IncompatExtents) {
		// ext4_calculate_resv_clusters: 2% of the clusters, at most 4096.
		resv = min(sb.BlocksCount/ratio/50, 4096)
	}
	st := Statfs{
		BlockSize: fs.blockSize,
		Files:     uint64(sb.InodesCount),
		FilesFree: freeInodes,
		NameLen:   nameLenMax,
	}
	if oh := overhead * ratio; oh < sb.BlocksCount {
		st.Blocks = sb.BlocksCount - oh
	}
	st.BlocksFree = freeClusters * ratio
	reserved := sb.RBlocksCount + resv*ratio
	if st.BlocksFree > reserved {
		st.BlocksAvail = st.BlocksFree - reserved
	}
	u := sb.UUID
	le32 := func(b []byte) uint64 { return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 }
	lo := le32(u[0:]) ^ le32(u[8:])
	hi := le32(u[4:]) ^ le32(u[12:])
	st.Fsid = lo | hi<<32
	return st, nil
}

// overheadClusters follows ext4_calculate_overhead: the superblock's
// s_overhead_clusters when bigalloc provides a sane one, else the
// superblock and descriptor copies, bitmaps and inode tables of every
// group, plus the internal journal.
func (fs *FS) overheadClusters() (uint64, error) {
	sb := fs.sb
	bigalloc := sb.HasRoCompat(RoCompatBigalloc)
	if bigalloc && sb.OverheadClusters != 0 && uint64(sb.OverheadClusters) <= sb.BlocksCount {
		return uint64(sb.OverheadClusters), nil
	}
	ratio := uint64(1) << (sb.LogClusterSize - sb.LogBlockSize)
	itb := (uint64(sb.InodesPerGroup)*uint64(sb.InodeSize) + uint64(fs.blockSize) - 1) / uint64(fs.blockSize)
	overhead := uint64(sb.FirstDataBlock) / ratio
	if bigalloc {
		overhead += fs.countOverheadBigalloc(itb)
	} else {
		for g := uint32(0); g < fs.groupCount; g++ {
			var has uint64
			if sb.hasSuper(g) {
				has = 1
			}
			overhead += has + fs.numGDB(g) + itb + 2
			if has == 1 {
				overhead += uint64(sb.ReservedGdtBlocks)
			}
		}
	}
	if sb.HasCompat(CompatHasJournal) && sb.JournalInum != 0 {
		if j, err := fs.readInode(sb.JournalInum); err == nil {
			overhead += (j.Size>>fs.blockShift + ratio - 1) / ratio
		}
	}
	return overhead, nil
}

// numGDB is ext4_bg_num_gdb: the descriptor blocks stored in group g.
func (fs *FS) numGDB(g uint32) uint64 {
	sb := fs.sb
	metagroup := g / fs.descPerBlock
	gdbCount := (uint64(fs.groupCount) + uint64(fs.descPerBlock) - 1) / uint64(fs.descPerBlock)
	if !sb.HasIncompat(IncompatMetaBG) || metagroup < sb.FirstMetaBG {
		if !sb.hasSuper(g) {
			return 0
		}
		if sb.HasIncompat(IncompatMetaBG) {
			return uint64(sb.FirstMetaBG)
		}
		return gdbCount
	}
	first := metagroup * fs.descPerBlock
	if g == first || g == first+1 || g == first+fs.descPerBlock-1 {
		return 1
	}
	return 0
}

// countOverheadBigalloc counts, like the bigalloc half of the kernel's
// count_overhead, the clusters holding any metadata block: bitmaps, inode
// tables, and the superblock and descriptor copies. It gathers cluster
// ranges in one pass over the descriptors and merges them, so the cost is
// proportional to the number of groups whatever the tables' sizes.
func (fs *FS) countOverheadBigalloc(itb uint64) uint64 {
	sb := fs.sb
	shift := sb.LogClusterSize - sb.LogBlockSize
	var spans [][2]uint64 // [first, end) in clusters
	add := func(b, n uint64) {
		if b >= sb.BlocksCount || n == 0 {
			return
		}
		n = min(n, sb.BlocksCount-b)
		spans = append(spans, [2]uint64{b >> shift, (b+n-1)>>shift + 1})
	}
	for g := uint32(0); g < fs.groupCount; g++ {
		if sb.hasSuper(g) {
			add(fs.groupFirstBlock(g), 1+fs.numGDB(g)+uint64(sb.ReservedGdtBlocks))
		}
		gd, err := fs.GroupDesc(g)
		if err != nil {
			continue
		}
		add(gd.BlockBitmap, 1)
		add(gd.InodeBitmap, 1)
		add(gd.InodeTable, itb)
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i][0] < spans[j][0] })
	var total, end uint64
	for _, s := range spans {
		if s[0] > end {
			end = s[0]
		}
		if s[1] > end {
			total += s[1] - end
			end = s[1]
		}
	}
	return total
}
