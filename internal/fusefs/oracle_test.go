package fusefs_test

import (
	"encoding/binary"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"safefs/internal/testimg"
)

// TestKernelOracle is the differential walk: every image of the matrix
// the kernel can mount is walked through a FUSE mount served by fusefs
// and through the kernel's own read-only ext4 mount, and the two must
// agree on names, types, modes, owners, sizes, link counts, inode
// numbers, nanosecond times (creation time included), symlink targets,
// xattr names and values, contents, and SEEK_DATA/SEEK_HOLE segments;
// then on statfs, st_blksize and the inode flags lsattr shows. Nothing is
// ignored in the walk's comparison.
func TestKernelOracle(t *testing.T) {
	requireFUSE(t)
	testimg.RequireKernelMount(t)
	for _, spec := range specs() {
		t.Run(spec.Name, func(t *testing.T) {
			// The images are built one at a time (testimg serializes
			// builds), but mounting and walking overlap, and the mmp
			// image spends seconds in the kernel's mount.
			t.Parallel()
			img := testimg.Build(t, spec)

			var want map[string]testimg.Entry
			var kst unix.Statfs_t
			var kflags map[string]inodeFlags
			kernelMount(t, img, func(dir string) {
				want = testimg.Walk(t, dir)
				if err := unix.Statfs(dir, &kst); err != nil {
					t.Fatal(err)
				}
				kflags = flagsOf(t, dir, want)
			})

			m := mountImage(t, img, mountConfig{})
			got := testimg.Walk(t, m.Dir)
			var fst unix.Statfs_t
			if err := unix.Statfs(m.Dir, &fst); err != nil {
				t.Fatal(err)
			}
			fflags := flagsOf(t, m.Dir, want)
			var rootSt unix.Stat_t
			if err := unix.Stat(m.Dir, &rootSt); err != nil {
				t.Fatal(err)
			}
			m.Unmount(t)

			testimg.Compare(t, want, got, testimg.CompareOpts{})
			checkBtime(t, want, got)

			// f_type (FUSE's magic), f_fsid (0 on every FUSE mount) and
			// f_flags (the mounts' options differ: noexec) are not the
			// filesystem's to show.
			for _, c := range []struct {
				field     string
				want, got uint64
			}{
				{"bsize", uint64(kst.Bsize), uint64(fst.Bsize)},
				{"frsize", uint64(kst.Frsize), uint64(fst.Frsize)},
				{"blocks", kst.Blocks, fst.Blocks},
				{"bfree", kst.Bfree, fst.Bfree},
				{"bavail", kst.Bavail, fst.Bavail},
				{"files", kst.Files, fst.Files},
				{"ffree", kst.Ffree, fst.Ffree},
				{"namelen", uint64(kst.Namelen), uint64(fst.Namelen)},
				{"st_blksize", uint64(kst.Bsize), uint64(rootSt.Blksize)},
			} {
				if c.want != c.got {
					t.Errorf("statfs: %s: want %d, got %d", c.field, c.want, c.got)
				}
			}
			compareFlags(t, kflags, fflags)
			if lines := m.logs.Lines(); len(lines) > 0 {
				t.Errorf("the server logged on an undamaged image: %q", lines)
			}
		})
	}
}

// checkBtime makes sure creation times actually reached the FUSE side:
// Compare skips Btime when either side has none, which would hide a
// server (or kernel) that never answers statx.
func checkBtime(t *testing.T, want, got map[string]testimg.Entry) {
	t.Helper()
	missing := 0
	for p, w := range want {
		if g, ok := got[p]; ok && !w.Btime.IsZero() && g.Btime.IsZero() {
			if missing++; missing <= 5 {
				t.Errorf("%s: Btime: want %v, got none", p, w.Btime)
			}
		}
	}
}

// inodeFlags is what lsattr reads: FS_IOC_GETFLAGS, and FS_IOC_FSGETXATTR's
// xflags and project ID.
type inodeFlags struct {
	flags, xflags, projid uint32
	err                   syscall.Errno
}

// flagsOf reads the inode flags of every regular file and directory of a
// walk, opening them as lsattr does.
func flagsOf(t *testing.T, dir string, entries map[string]testimg.Entry) map[string]inodeFlags {
	t.Helper()
	out := map[string]inodeFlags{}
	for p, e := range entries {
		if typ := e.Mode & syscall.S_IFMT; typ != syscall.S_IFREG && typ != syscall.S_IFDIR {
			continue
		}
		fd, err := unix.Open(filepath.Join(dir, p), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NOATIME, 0)
		if err != nil {
			t.Errorf("%s: open: %v", p, err)
			continue
		}
		var f inodeFlags
		v, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
		f.flags, f.err = v, errnoOf(err)
		var fsx [28]byte
		if f.err == 0 {
			_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), fsIocFsgetxattr, uintptr(unsafe.Pointer(&fsx[0])))
			f.err = e
			f.xflags = binary.NativeEndian.Uint32(fsx[0:])
			f.projid = binary.NativeEndian.Uint32(fsx[12:])
		}
		unix.Close(fd)
		out[p] = f
	}
	return out
}

func compareFlags(t *testing.T, want, got map[string]inodeFlags) {
	t.Helper()
	var paths []string
	for p := range want {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	n := 0
	for _, p := range paths {
		if w, g := want[p], got[p]; w != g {
			t.Errorf("%s: inode flags: want %#x (xflags %#x, project %d, err %v), got %#x (xflags %#x, project %d, err %v)",
				p, w.flags, w.xflags, w.projid, w.err, g.flags, g.xflags, g.projid, g.err)
			if n++; n == 10 {
				return
			}
		}
	}
}

const fsIocFsgetxattr = 0x801c581f // FS_IOC_FSGETXATTR, missing from x/sys
