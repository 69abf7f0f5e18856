package ext4_test

import (
	"crypto/sha256"
	"encoding/hex"
	"sort"
	"strconv"
	"strings"
	"testing"

	"safefs/internal/ext4"
	"safefs/internal/testimg"
)

// matrix returns the image specs to test, without the 100,000-entry
// directory in -short mode.
func matrix() []testimg.Spec {
	var out []testimg.Spec
	for _, s := range testimg.Matrix() {
		if testing.Short() && isLargeDir(s) {
			continue
		}
		out = append(out, s)
	}
	return out
}

// TestKernelOracle walks every image of the matrix through internal/ext4
// and through the kernel's read-only ext4 mount, and compares names, types,
// modes, owners, sizes, link counts, inode numbers, nanosecond times,
// symlink targets, xattrs, content hashes and data segments; then statfs.
func TestKernelOracle(t *testing.T) {
	testimg.RequireKernelMount(t)
	for _, spec := range matrix() {
		if spec.NoKernel {
			continue
		}
		t.Run(spec.Name, func(t *testing.T) {
			img := testimg.Build(t, spec)
			fsys := openImage(t, img, nil)
			res := walkFS(fsys, defaultLimits)
			for i, err := range res.errs {
				if i == 20 {
					t.Errorf("... %d errors in all", len(res.errs))
					break
				}
				t.Error(err)
			}
			want := testimg.KernelWalk(t, img)
			testimg.Compare(t, want, res.entries, testimg.CompareOpts{})

			kst := testimg.KernelStatfs(t, img)
			st, err := fsys.Statfs()
			if err != nil {
				t.Fatal(err)
			}
			check := func(field string, want, got uint64) {
				if want != got {
					t.Errorf("statfs: %s: want %d, got %d", field, want, got)
				}
			}
			check("bsize", uint64(kst.Bsize), uint64(st.BlockSize))
			check("blocks", kst.Blocks, st.Blocks)
			check("bfree", kst.Bfree, st.BlocksFree)
			check("bavail", kst.Bavail, st.BlocksAvail)
			check("files", kst.Files, st.Files)
			check("ffree", kst.Ffree, st.FilesFree)
			check("namelen", uint64(kst.Namelen), uint64(st.NameLen))
			fsid := uint64(uint32(kst.Fsid.X__val[0])) | uint64(uint32(kst.Fsid.X__val[1]))<<32
			check("fsid", fsid, st.Fsid)
		})
	}
}

// TestDebugfsOracle checks every inode the walk reaches against debugfs's
// stat, its file contents against debugfs's dump and its extents against
// debugfs's ex, with one debugfs run per image and command. It needs no
// root.
func TestDebugfsOracle(t *testing.T) {
	for _, spec := range matrix() {
		if isLargeDir(spec) {
			continue // the kernel oracle covers these
		}
		t.Run(spec.Name, func(t *testing.T) {
			img := testimg.Build(t, spec)
			fsys := openImage(t, img, nil)
			res := walkFS(fsys, defaultLimits)
			for _, err := range res.errs {
				t.Error(err)
			}
			var paths, files, extentFiles []string
			for p := range res.entries {
				paths = append(paths, p)
			}
			sort.Strings(paths)
			inodes := map[string]*ext4.Inode{}
			for _, p := range paths {
				in, err := fsys.Inode(uint32(res.entries[p].Ino))
				if err != nil {
					t.Fatalf("%s: %v", p, err)
				}
				inodes[p] = in
				// debugfs dumps sparse files in full: leave the
				// 300 MiB one to the kernel oracle.
				if in.IsRegular() && in.Size <= 32<<20 {
					files = append(files, p)
				}
				if in.Flags&ext4.FlagExtents != 0 && (in.IsRegular() || in.IsDir()) {
					extentFiles = append(extentFiles, p)
				}
			}
			for i, st := range testimg.DebugfsStats(t, img, paths) {
				checkDebugfsStat(t, paths[i], inodes[paths[i]], res.entries[paths[i]], st)
			}
			for i, data := range testimg.DebugfsDumps(t, img, files) {
				e, in := res.entries[files[i]], inodes[files[i]]
				if in.HasInlineData() {
					// debugfs 1.47 dumps the 60-byte i_block of an
					// inline file whatever its size; the file is
					// i_size long, zero-filled past its inline data.
					data = append(data[:min(uint64(len(data)), in.Size)], make([]byte, in.Size-min(uint64(len(data)), in.Size))...)
				}
				sum := sha256.Sum256(data)
				if hex.EncodeToString(sum[:]) != e.SHA256 {
					t.Errorf("%s: contents differ from debugfs dump (%d bytes)", files[i], len(data))
				}
			}
			for i, exts := range testimg.DebugfsExtentsBatch(t, img, extentFiles) {
				checkDebugfsExtents(t, fsys, extentFiles[i], inodes[extentFiles[i]], exts)
			}
		})
	}
}

func isLargeDir(s testimg.Spec) bool {
	return s.Tree == testimg.TreeLargeDir || s.Tree == testimg.TreeLargeDirLong
}

func checkDebugfsStat(t *testing.T, p string, in *ext4.Inode, e testimg.Entry, st map[string]string) {
	num := func(field string, want string, got uint64) {
		// debugfs prints owners as signed 32-bit numbers.
		w, err := strconv.ParseInt(strings.TrimPrefix(want, "0x"), pickBase(want), 64)
		if err != nil {
			t.Errorf("%s: debugfs %s %q: %v", p, field, want, err)
			return
		}
		if field == "User" || field == "Group" {
			w = int64(uint32(w))
		}
		if uint64(w) != got {
			t.Errorf("%s: %s: debugfs says %d, got %d", p, field, w, got)
		}
	}
	num("Inode", st["Inode"], e.Ino)
	num("Links", st["Links"], e.Nlink)
	num("Size", st["Size"], uint64(e.Size))
	num("User", st["User"], uint64(e.Uid))
	num("Group", st["Group"], uint64(e.Gid))
	num("Generation", st["Generation"], uint64(in.Generation))
	num("Flags", st["Flags"], uint64(in.Flags))
	num("Blockcount", st["Blockcount"], in.Blocks)
	for _, tm := range []struct {
		name string
		ts   testimg.Time
	}{{"ctime", e.Ctime}, {"mtime", e.Mtime}, {"atime", e.Atime}, {"crtime", e.Btime}} {
		if _, ok := st[tm.name+"_sec"]; !ok {
			if tm.name == "crtime" && !e.Btime.IsZero() {
				t.Errorf("%s: debugfs shows no crtime, got %v", p, e.Btime)
			}
			continue
		}
		sec, _ := strconv.ParseInt(st[tm.name+"_sec"], 10, 64)
		nsec, _ := strconv.ParseInt(st[tm.name+"_nsec"], 10, 64)
		if (testimg.Time{Sec: sec, Nsec: nsec}) != tm.ts {
			t.Errorf("%s: %s: debugfs says %d.%09d, got %v", p, tm.name, sec, nsec, tm.ts)
		}
	}
}

func checkDebugfsExtents(t *testing.T, fsys *ext4.FS, p string, in *ext4.Inode, exts []testimg.Extent) {
	for _, x := range exts {
		ext, err := fsys.MapBlock(in, x.Logical)
		if err != nil {
			t.Errorf("%s: block %d: %v", p, x.Logical, err)
			continue
		}
		want := ext4.Mapped
		if x.Uninit {
			want = ext4.Unwritten
		}
		if ext.Kind != want || ext.Physical != x.Physical || ext.Logical != x.Logical || ext.Len != x.Len {
			t.Errorf("%s: extent at %d: debugfs says %s %d+%d -> %d, got %s %d+%d -> %d", p, x.Logical,
				want, x.Logical, x.Len, x.Physical, ext.Kind, ext.Logical, ext.Len, ext.Physical)
		}
	}
}

func pickBase(s string) int {
	if strings.HasPrefix(s, "0x") {
		return 16
	}
	return 10
}

// TestOpenRefuses checks that unsupported features are refused by name.
func TestOpenRefuses(t *testing.T) {
	for _, c := range []struct {
		feature string
		bit     uint32
	}{
		{"compression", ext4.IncompatCompression},
		{"dirdata", ext4.IncompatDirdata},
		{"encrypt", ext4.IncompatEncrypt},
		{"casefold", ext4.IncompatCasefold},
		{"journal_dev", ext4.IncompatJournalDev},
		{"incompat bit 0x80000", 0x80000},
	} {
		sb := minimalSuperblock()
		le32put(sb[0x60:], le32get(sb[0x60:])|c.bit)
		_, err := ext4.ParseSuperblock(sb, 0)
		if err == nil || !strings.Contains(err.Error(), c.feature) {
			t.Errorf("feature %s: got %v, want an error naming it", c.feature, err)
		}
	}
}

// minimalSuperblock is a valid superblock of a 1 MiB ext2 filesystem with
// 1 KiB blocks and one group.
func minimalSuperblock() []byte {
	b := make([]byte, ext4.SuperblockSize)
	le32put(b[0x00:], 128)  // inodes
	le32put(b[0x04:], 1024) // blocks
	le32put(b[0x14:], 1)    // first data block
	le32put(b[0x20:], 8192) // blocks per group
	le32put(b[0x24:], 8192) // clusters per group
	le32put(b[0x28:], 128)  // inodes per group
	b[0x38], b[0x39] = 0x53, 0xEF
	le32put(b[0x4C:], 1)  // revision
	le32put(b[0x54:], 11) // first inode
	b[0x58] = 128         // inode size
	return b
}

func le32put(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}
func le32get(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
