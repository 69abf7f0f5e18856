package ext4_test

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"safefs/internal/ext4"
	"safefs/internal/testimg"
)

// Fuzzing works on small base images built here with mke2fs, so that the
// fuzzer's mutations land in one structure at a time: each target replaces
// one region (the superblock, a descriptor block, an inode, an extent
// block, a directory block, an htree root, an xattr block) with the fuzz
// input and walks the whole filesystem. The bases have no metadata
// checksums, so mutations reach the parsers instead of stopping at a
// checksum; base 1 keeps metadata_csum to fuzz the checksum paths too.

type fuzzBase struct {
	img []byte
	fs  *ext4.FS
}

var (
	fuzzOnce  sync.Once
	fuzzBases []fuzzBase
	fuzzSkip  string // why fuzzing cannot run here (a missing tool)
	fuzzErr   string // why building the bases failed
)

// fixedTime keeps base images byte-identical from run to run, so that a
// saved crasher reproduces.
var fixedTime = time.Unix(1700000000, 0)

func buildFuzzTree(dir string) error {
	write := func(name string, data []byte) error {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		return os.WriteFile(p, data, 0o644)
	}
	if err := write("small", []byte("hello, world\n")); err != nil {
		return err
	}
	// A sparse file of ten pieces: more extents than i_block holds, so
	// the tree has an index level.
	f, err := os.Create(filepath.Join(dir, "frag"))
	if err != nil {
		return err
	}
	for i := 0; i < 10; i++ {
		if _, err := f.WriteAt(bytes.Repeat([]byte{byte('a' + i)}, 1024), int64(i)*8192); err != nil {
			return err
		}
	}
	f.Close()
	for i := 0; i < 80; i++ {
		if err := write(filepath.Join("dir", "entry-with-a-longish-name-"+string(rune('a'+i%26))+string(rune('a'+i/26))), nil); err != nil {
			return err
		}
	}
	if err := os.Symlink("small", filepath.Join(dir, "fast")); err != nil {
		return err
	}
	if err := os.Symlink(string(bytes.Repeat([]byte("long/"), 30)), filepath.Join(dir, "slow")); err != nil {
		return err
	}
	if err := write("x", []byte("xattrs")); err != nil {
		return err
	}
	_ = setxattr(filepath.Join(dir, "x"), "user.a", []byte("1"))
	_ = setxattr(filepath.Join(dir, "x"), "user.big", bytes.Repeat([]byte("v"), 600))
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return lutimes(p, fixedTime)
	})
}

func fuzzImages(tb testing.TB) []fuzzBase {
	fuzzOnce.Do(func() {
		if _, err := exec.LookPath("mkfs.ext4"); err != nil {
			fuzzSkip = "mkfs.ext4 not installed"
			return
		}
		dir, err := os.MkdirTemp("", "safefs-fuzz")
		if err != nil {
			fuzzErr = err.Error()
			return
		}
		defer os.RemoveAll(dir)
		src := filepath.Join(dir, "src")
		if err := buildFuzzTree(src); err != nil {
			fuzzErr = err.Error()
			return
		}
		conf := filepath.Join(dir, "mke2fs.conf")
		if err := os.WriteFile(conf, []byte(testimg.MkfsConfig), 0o644); err != nil {
			fuzzErr = err.Error()
			return
		}
		for i, feat := range []string{"^metadata_csum,^has_journal", "^has_journal", "inline_data,^metadata_csum,^has_journal"} {
			img := filepath.Join(dir, "base.img")
			os.Remove(img)
			mk := exec.Command("mkfs.ext4", "-q", "-F", "-b", "1024", "-I", "256", "-N", "128", "-O", feat,
				"-U", "5afef5a0-7e57-4d1a-9e00-00000000f022", "-E", "hash_seed=5afef5a0-7e57-4d1a-9e00-00000000f0a5",
				"-d", src, img, "1M")
			mk.Env = append(os.Environ(), "E2FSPROGS_FAKE_TIME=1700000000", "MKE2FS_CONFIG="+conf)
			if out, err := mk.CombinedOutput(); err != nil {
				fuzzErr = "mkfs: " + string(out)
				return
			}
			ck := exec.Command("e2fsck", "-fyD", img)
			ck.Env = mk.Env
			_ = ck.Run() // exit 1 means "changed": the index was built
			data, err := os.ReadFile(img)
			if err != nil {
				fuzzErr = err.Error()
				return
			}
			fsys, err := ext4.Open(bytes.NewReader(data), &ext4.Options{DeviceSize: int64(len(data))})
			if err != nil {
				fuzzErr = "base " + string(rune('0'+i)) + ": " + err.Error()
				return
			}
			fuzzBases = append(fuzzBases, fuzzBase{img: data, fs: fsys})
		}
	})
	if fuzzSkip != "" {
		tb.Skip("cannot build fuzz base images: " + fuzzSkip)
	}
	if fuzzErr != "" {
		tb.Fatal("building fuzz base images: " + fuzzErr)
	}
	return fuzzBases
}

// fuzzLimits keep one fuzz execution short.
var fuzzLimits = walkLimits{maxEntries: 2000, maxRead: 1 << 20}

// walkBytes opens img and walks it; all that matters is that it returns.
func walkBytes(img []byte) {
	fsys, err := ext4.Open(bytes.NewReader(img), &ext4.Options{DeviceSize: int64(len(img)), NoRecovery: true})
	if err != nil {
		return
	}
	walkFS(fsys, fuzzLimits)
	fsys.Statfs()
}

// region locates the bytes a target fuzzes within base b; sel picks one of
// several candidates where a target has them. ok false means the base has
// no such structure.
type region func(b fuzzBase, sel byte) (off, n int, ok bool)

func lookupIno(b fuzzBase, name string) (*ext4.Inode, bool) {
	in, err := resolve(b.fs, name)
	return in, err == nil
}

func blockRegion(b fuzzBase, pblk uint64) (int, int, bool) {
	bs := int(b.fs.BlockSize())
	return int(pblk) * bs, bs, pblk != 0
}

func inodeRegion(b fuzzBase, ino uint32) (int, int, bool) {
	sb := b.fs.Superblock()
	g := (ino - 1) / sb.InodesPerGroup
	gd, err := b.fs.GroupDesc(g)
	if err != nil {
		return 0, 0, false
	}
	idx := (ino - 1) % sb.InodesPerGroup
	return int(gd.InodeTable)*int(b.fs.BlockSize()) + int(idx)*int(sb.InodeSize), int(sb.InodeSize), true
}

func dirBlockRegion(name string, lblk uint64) region {
	return func(b fuzzBase, _ byte) (int, int, bool) {
		in, ok := lookupIno(b, name)
		if !ok || in.HasInlineData() {
			return 0, 0, false
		}
		ext, err := b.fs.MapBlock(in, lblk)
		if err != nil || ext.Kind != ext4.Mapped {
			return 0, 0, false
		}
		return blockRegion(b, ext.Physical)
	}
}

// fuzzRegion runs a fuzz target that overwrites one region of a base
// image with the input: byte 0 picks the base, byte 1 the candidate region
// (of nsel), the rest replaces the region's bytes.
func fuzzRegion(f *testing.F, nsel int, where region) {
	bases := fuzzImages(f)
	for i, b := range bases {
		for sel := 0; sel < nsel; sel++ {
			if off, n, ok := where(b, byte(sel)); ok {
				f.Add(append([]byte{byte(i), byte(sel)}, b.img[off:off+n]...))
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 {
			return
		}
		b := bases[int(data[0])%len(bases)]
		off, n, ok := where(b, byte(int(data[1])%nsel))
		if !ok {
			return
		}
		img := bytes.Clone(b.img)
		copy(img[off:off+n], data[2:])
		walkBytes(img)
	})
}

// FuzzSuperblock replaces the primary superblock.
func FuzzSuperblock(f *testing.F) {
	fuzzRegion(f, 1, func(b fuzzBase, _ byte) (int, int, bool) { return ext4.SuperblockOffset, ext4.SuperblockSize, true })
}

// FuzzGroupDesc replaces the first block of group descriptors.
func FuzzGroupDesc(f *testing.F) {
	// With 1 KiB blocks the descriptor table starts in block 2.
	fuzzRegion(f, 1, func(b fuzzBase, _ byte) (int, int, bool) { return blockRegion(b, 2) })
}

// FuzzInode replaces one inode: the root, or one of the files of the base
// tree (an extent tree with an index level, a directory, fast and slow
// symlinks, a file with xattrs, a small file).
func FuzzInode(f *testing.F) {
	names := []string{"", "frag", "dir", "fast", "slow", "x", "small"}
	fuzzRegion(f, len(names), func(b fuzzBase, sel byte) (int, int, bool) {
		if sel == 0 {
			return inodeRegion(b, 2)
		}
		in, ok := lookupIno(b, names[sel])
		if !ok {
			return 0, 0, false
		}
		return inodeRegion(b, in.Ino)
	})
}

// FuzzExtentTree replaces the leaf block of a two-level extent tree.
func FuzzExtentTree(f *testing.F) { fuzzRegion(f, 1, extentLeafRegion) }

// FuzzDirBlock replaces a leaf block of an indexed directory (block 1).
func FuzzDirBlock(f *testing.F) { fuzzRegion(f, 1, dirBlockRegion("dir", 1)) }

// FuzzHtree replaces the dx_root (block 0) of an indexed directory.
func FuzzHtree(f *testing.F) { fuzzRegion(f, 1, dirBlockRegion("dir", 0)) }

// FuzzXattrBlock replaces an external xattr block.
func FuzzXattrBlock(f *testing.F) { fuzzRegion(f, 1, xattrBlockRegion) }

func xattrBlockRegion(b fuzzBase, _ byte) (int, int, bool) {
	in, ok := lookupIno(b, "x")
	if !ok || in.FileACL == 0 {
		return 0, 0, false
	}
	return blockRegion(b, in.FileACL)
}

// FuzzImage walks whole images: the generated bases and, when the
// e2fsprogs corpus is beside the repository, its smaller images.
func FuzzImage(f *testing.F) {
	for _, b := range fuzzImages(f) {
		f.Add(b.img)
	}
	for _, c := range corpusImages(f, 1<<20) {
		f.Add(c.data)
	}
	f.Fuzz(func(t *testing.T, img []byte) { walkBytes(img) })
}

// fuzzRegions lists every region-replacing target's locator, so that a
// test can check each finds its structure in some base image (otherwise
// the target would fuzz nothing).
var fuzzRegions = map[string]region{
	"htree root":   dirBlockRegion("dir", 0),
	"dir leaf":     dirBlockRegion("dir", 1),
	"xattr block":  xattrBlockRegion,
	"extent block": extentLeafRegion,
}

func extentLeafRegion(b fuzzBase, _ byte) (int, int, bool) {
	in, ok := lookupIno(b, "frag")
	if !ok || in.Flags&ext4.FlagExtents == 0 {
		return 0, 0, false
	}
	le := binary.LittleEndian
	if le.Uint16(in.Block[6:]) == 0 { // depth 0: no extent block
		return 0, 0, false
	}
	leaf := uint64(le.Uint32(in.Block[16:])) | uint64(le.Uint16(in.Block[20:]))<<32
	return blockRegion(b, leaf)
}

// TestFuzzBasesHaveRegions checks that the region fuzzers have something
// to replace.
func TestFuzzBasesHaveRegions(t *testing.T) {
	bases := fuzzImages(t)
	for name, where := range fuzzRegions {
		found := false
		for _, b := range bases {
			if _, _, ok := where(b, 0); ok {
				found = true
			}
		}
		if !found {
			t.Errorf("no fuzz base image has a %s", name)
		}
	}
	root := mustResolve(t, bases[0].fs, "dir")
	if root.Flags&ext4.FlagIndex == 0 {
		t.Errorf("the fuzz bases' directory has no htree index")
	}
}
