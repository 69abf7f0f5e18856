//go:build linux

package testimg

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	code := m.Run()
	Cleanup()
	os.Exit(code)
}

// specs returns the matrix, without the slow large-directory image in
// -short mode.
func specs(t *testing.T) []Spec {
	var out []Spec
	for _, s := range Matrix() {
		if (s.Tree == TreeLargeDir || s.Tree == TreeLargeDirLong) && testing.Short() {
			continue
		}
		out = append(out, s)
	}
	return out
}

func TestMatrixBuildsAndFsckClean(t *testing.T) {
	requireTools(t, "mke2fs", "debugfs", "e2fsck")
	total := time.Now()
	seen := map[string]bool{}
	for _, s := range specs(t) {
		if seen[s.Name] {
			t.Errorf("duplicate spec name %q", s.Name)
		}
		seen[s.Name] = true
		t.Run(s.Name, func(t *testing.T) {
			start := time.Now()
			img := Build(t, s)
			t.Logf("built in %v", time.Since(start).Round(time.Millisecond))
			out, errOut, err := runTool("e2fsck", "-fn", img)
			if err != nil {
				t.Fatalf("e2fsck -fn: %v\n%s%s", err, out, errOut)
			}
			if again := Build(t, s); again != img {
				t.Errorf("second Build returned %s, want cached %s", again, img)
			}
		})
	}
	t.Logf("matrix built and checked in %v", time.Since(total).Round(time.Millisecond))
}

func TestMatrixFeatures(t *testing.T) {
	requireTools(t, "dumpe2fs")
	want := map[string][]string{
		"ext2":                    {"-has_journal", "-extent"},
		"ext3":                    {"has_journal", "-extent"},
		"ext4-default":            {"extent", "64bit", "metadata_csum", "flex_bg"},
		"ext4-inline":             {"inline_data"},
		"ext4-bigalloc":           {"bigalloc"},
		"ext4-no64bit":            {"-64bit"},
		"ext4-uninit-bg":          {"uninit_bg", "-metadata_csum"},
		"ext4-ea-inode":           {"ea_inode"},
		"ext4-metadata-csum-seed": {"metadata_csum_seed"},
		"ext4-flex-metabg":        {"meta_bg", "-resize_inode"},
		"ext4-sparse-super2":      {"sparse_super2"},
		"ext4-project-quota":      {"quota", "project"},
		"ext4-orphan-file":        {"orphan_file"},
		"ext4-largedir":           {"large_dir"},
		"ext4-mmp":                {"mmp"},
		"ext4-no-flex-bg":         {"-flex_bg"},
		"ext2-no-filetype":        {"-filetype"},
	}
	for _, s := range specs(t) {
		t.Run(s.Name, func(t *testing.T) {
			img := Build(t, s)
			out, _, err := runTool("dumpe2fs", "-h", img)
			if err != nil {
				t.Fatalf("dumpe2fs: %v", err)
			}
			var features []string
			for _, l := range strings.Split(out, "\n") {
				if v, ok := strings.CutPrefix(l, "Filesystem features:"); ok {
					features = strings.Fields(v)
				}
			}
			has := map[string]bool{}
			for _, f := range features {
				has[f] = true
			}
			for _, w := range want[s.Name] {
				if neg, ok := strings.CutPrefix(w, "-"); ok {
					if has[neg] {
						t.Errorf("feature %s present, want absent (%v)", neg, features)
					}
				} else if !has[w] {
					t.Errorf("feature %s missing (%v)", w, features)
				}
			}
			hash := "half_md4"
			switch s.Name {
			case "ext4-hash-tea":
				hash = "tea"
			case "ext4-hash-legacy":
				hash = "legacy"
			}
			if !strings.Contains(out, "Default directory hash:   "+hash+"\n") {
				t.Errorf("default directory hash is not %s", hash)
			}
			if !strings.Contains(out, "Filesystem UUID:          "+UUID) || !strings.Contains(out, "Directory Hash Seed:      "+HashSeed) {
				t.Errorf("UUID or hash seed not fixed:\n%s", out)
			}
		})
	}
}

// comparable strips what legitimately differs between a source tree and
// the image made from it, so that the rest can go through Compare: inode
// numbers, ctimes, birth times and atimes (reading the source moves them),
// directory sizes (each file system lays directories out its own way), the
// image's lost+found and the link it adds to the root.
func comparable(m map[string]Entry, image bool) map[string]Entry {
	out := map[string]Entry{}
	for p, e := range m {
		if image && (p == "lost+found" || strings.HasPrefix(p, "lost+found/")) {
			continue
		}
		if e.Mode&syscall.S_IFMT == syscall.S_IFDIR {
			e.Size = 0
			if image && p == "." {
				e.Nlink--
			}
		}
		out[p] = e
	}
	return out
}

func TestKernelWalkMatchesSource(t *testing.T) {
	RequireKernelMount(t)
	s := SpecNamed(t, "ext4-default")
	img := Build(t, s)
	kernel := KernelWalk(t, img)
	src := Walk(t, Source(t, s))
	for _, p := range []string{".", "files/size-5242880", "sparse/scattered", "devs/big-minor", "xattrs/acl-file", "times/y2400", "lost+found"} {
		if _, ok := kernel[p]; !ok {
			t.Errorf("kernel walk lacks %s", p)
		}
	}
	Compare(t, comparable(src, false), comparable(kernel, true), CompareOpts{IgnoreAtime: true, IgnoreBtime: true, IgnoreCtime: true, IgnoreIno: true})

	// Spot checks that the walker reports what the tree generator meant,
	// so that a walker bug cannot hide behind agreeing with itself.
	if e := kernel["devs/big-minor"]; e.Rdev != Mkdev(259, 70000) || e.Mode != syscall.S_IFBLK|0o600 {
		t.Errorf("devs/big-minor: rdev %d:%d mode %o", Major(e.Rdev), Minor(e.Rdev), e.Mode)
	}
	if e := kernel["devs/null"]; e.Rdev != 0x103 {
		t.Errorf("devs/null: rdev %#x, want 0x103", e.Rdev)
	}
	if e := kernel["owners/u4000000000"]; e.Uid != 4000000000 || e.Gid != 4000000000 {
		t.Errorf("owners/u4000000000: %d:%d", e.Uid, e.Gid)
	}
	if e := kernel["modes/setuid"]; e.Mode != syscall.S_IFREG|0o4755 {
		t.Errorf("modes/setuid: mode %o", e.Mode)
	}
	if e := kernel["links/a/second"]; e.Nlink != 3 || e.Ino != kernel["links/first"].Ino {
		t.Errorf("hard link: nlink %d ino %d vs %d", e.Nlink, e.Ino, kernel["links/first"].Ino)
	}
	if e := kernel["xattrs/acl-file"]; !bytes.Equal(e.Xattrs["system.posix_acl_access"], FileACL()) {
		t.Errorf("acl-file: ACL %x, want %x", e.Xattrs["system.posix_acl_access"], FileACL())
	}
	if e := kernel["xattrs/acl-dir"]; !bytes.Equal(e.Xattrs["system.posix_acl_default"], DirDefaultACL()) {
		t.Errorf("acl-dir: default ACL %x", e.Xattrs["system.posix_acl_default"])
	}
	if e := kernel["xattrs/basic"]; e.Xattrs["user.empty"] == nil || len(e.Xattrs["user.empty"]) != 0 || string(e.Xattrs["trusted.x"]) != "t" {
		t.Errorf("xattrs/basic: %q", e.Xattrs)
	}
	for p, want := range map[string][2]Time{
		"times/nsec":     {{1600000000, 987654321}, {1700000000, 123456789}},
		"times/pre1970":  {{-2147483648, 0}, {-1000000000, 5}},
		"times/post2038": {{2147483648, 1}, {4294979641, 500}},
		"times/y2400":    {{13569465600, 999999999}, {13569465600 + 86399, 1}},
		"times/link":     {{1111111111, 111111111}, {1222222222, 222222222}},
	} {
		e := kernel[p]
		if e.Atime != want[0] || e.Mtime != want[1] {
			t.Errorf("%s: atime %v mtime %v, want %v %v", p, e.Atime, e.Mtime, want[0], want[1])
		}
		if wb := (Time{want[1].Sec - 86400, 424242}); e.Btime != wb {
			t.Errorf("%s: btime %v, want %v", p, e.Btime, wb)
		}
	}
	e := kernel["sparse/pieces"]
	wantSeg := [][2]int64{{0, 4096}, {1 << 20, 1<<20 + 4096}, {10 << 20, 10<<20 + 123 + 1000}}
	if fmt.Sprint(e.Segments) != fmt.Sprint(wantSeg) {
		t.Errorf("sparse/pieces segments %v, want %v", e.Segments, wantSeg)
	}
	if e := kernel["sparse/all-hole"]; e.Segments == nil || len(e.Segments) != 0 || e.Size != 5<<20+1 {
		t.Errorf("sparse/all-hole: %v size %d", e.Segments, e.Size)
	}
	sum := sha256.Sum256(randBytes("files/size-4097", 4097))
	if got := kernel["files/size-4097"].SHA256; got != hex.EncodeToString(sum[:]) {
		t.Errorf("files/size-4097 sha %s", got)
	}
}

// TestKernelWalkMatchesLstatWalk checks the walker itself against an
// independent, plain os.Lstat/os.ReadFile walk of the source tree: names,
// file types and permission bits, sizes, contents and symlink targets.
func TestKernelWalkMatchesLstatWalk(t *testing.T) {
	RequireKernelMount(t)
	s := SpecNamed(t, "ext4-default")
	img := Build(t, s)
	kernel := KernelWalk(t, img)
	src := Source(t, s)
	seen := map[string]bool{}
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		seen[rel] = true
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		k, ok := kernel[rel]
		if !ok {
			t.Errorf("%s: not in kernel walk", rel)
			return nil
		}
		st := fi.Sys().(*syscall.Stat_t)
		if k.Mode != st.Mode {
			t.Errorf("%s: mode %o, lstat %o", rel, k.Mode, st.Mode)
		}
		switch {
		case fi.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			if k.Size != fi.Size() || k.SHA256 != hex.EncodeToString(sum[:]) {
				t.Errorf("%s: size %d sha %s, lstat %d sha %x", rel, k.Size, k.SHA256, fi.Size(), sum)
			}
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if k.Target != target || k.Size != fi.Size() {
				t.Errorf("%s: target %q size %d, readlink %q size %d", rel, k.Target, k.Size, target, fi.Size())
			}
		case fi.Mode()&fs.ModeDevice != 0:
			if k.Rdev != st.Rdev {
				t.Errorf("%s: rdev %#x, lstat %#x", rel, k.Rdev, st.Rdev)
			}
		}
		if k.Uid != st.Uid || k.Gid != st.Gid {
			t.Errorf("%s: owner %d:%d, lstat %d:%d", rel, k.Uid, k.Gid, st.Uid, st.Gid)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for p := range kernel {
		if !seen[p] && p != "lost+found" {
			t.Errorf("%s: only in kernel walk", p)
		}
	}
}

// recorder is a testing.TB that keeps Errorf messages instead of failing,
// to test that Compare fails when it should.
type recorder struct {
	testing.TB
	msgs []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.msgs = append(r.msgs, fmt.Sprintf(format, args...))
}

func TestCompareReportsDifferences(t *testing.T) {
	want := map[string]Entry{
		".":      {Path: ".", Mode: syscall.S_IFDIR | 0o755, Nlink: 2},
		"a":      {Path: "a", Mode: syscall.S_IFREG | 0o644, Size: 3, SHA256: "aa", Xattrs: map[string][]byte{"user.x": []byte("1")}, Segments: [][2]int64{{0, 4096}}},
		"gone":   {Path: "gone", Mode: syscall.S_IFREG},
		"dev":    {Path: "dev", Mode: syscall.S_IFCHR | 0o600, Rdev: Mkdev(259, 70000)},
		"timed":  {Path: "timed", Mtime: Time{1, 2}, Atime: Time{3, 4}, Btime: Time{5, 6}},
		"noseg":  {Path: "noseg", Segments: [][2]int64{{0, 1}}},
		"nilxat": {Path: "nilxat"},
	}
	clone := func(m map[string]Entry) map[string]Entry {
		c := map[string]Entry{}
		for k, v := range m {
			c[k] = v
		}
		return c
	}

	r := &recorder{TB: t}
	Compare(r, want, clone(want), CompareOpts{})
	if len(r.msgs) != 0 {
		t.Fatalf("identical maps: %q", r.msgs)
	}

	got := clone(want)
	a := got["a"]
	a.Mode = syscall.S_IFREG | 0o600
	a.Xattrs = map[string][]byte{"user.x": []byte("2"), "user.y": nil}
	a.Segments = [][2]int64{{0, 8192}}
	got["a"] = a
	delete(got, "gone")
	got["extra"] = Entry{Path: "extra"}
	d := got["dev"]
	d.Rdev = Mkdev(259, 70001)
	got["dev"] = d
	tm := got["timed"]
	tm.Atime = Time{}
	tm.Btime = Time{} // unknown: not compared
	got["timed"] = tm
	ns := got["noseg"]
	ns.Segments = nil // not collected: not compared
	got["noseg"] = ns
	nx := got["nilxat"]
	nx.Xattrs = map[string][]byte{} // empty equals nil
	got["nilxat"] = nx

	r = &recorder{TB: t}
	Compare(r, want, got, CompareOpts{})
	wantMsgs := []string{
		"a: Mode: want 0100644, got 0100600",
		`a: Xattrs[user.x]: want "1", got "2"`,
		`a: Xattrs[user.y]: want absent, got ""`,
		"a: Segments: want {[0,4096)}, got {[0,8192)}",
		"dev: Rdev: want 259:70000, got 259:70001",
		"extra: presence: want absent, got extra entry",
		"gone: presence: want present, got missing",
		"timed: Atime: want 3.000000004, got 0.000000000",
	}
	if strings.Join(r.msgs, "\n") != strings.Join(wantMsgs, "\n") {
		t.Errorf("Compare messages:\n%s\nwant:\n%s", strings.Join(r.msgs, "\n"), strings.Join(wantMsgs, "\n"))
	}

	r = &recorder{TB: t}
	Compare(r, want, got, CompareOpts{IgnoreAtime: true, IgnoreSegments: true})
	if len(r.msgs) != len(wantMsgs)-2 {
		t.Errorf("with ignores: %q", r.msgs)
	}

	// Many differences: Compare stops after 50 and says so.
	many, other := map[string]Entry{}, map[string]Entry{}
	for i := 0; i < 100; i++ {
		p := fmt.Sprintf("f%03d", i)
		many[p] = Entry{Path: p, Size: 1}
		other[p] = Entry{Path: p, Size: 2}
	}
	r = &recorder{TB: t}
	Compare(r, many, other, CompareOpts{})
	if len(r.msgs) != 51 || !strings.Contains(r.msgs[50], "stopped") {
		t.Errorf("got %d messages, last %q", len(r.msgs), r.msgs[len(r.msgs)-1])
	}
}

func TestCompareCatchesChangedKernelField(t *testing.T) {
	RequireKernelMount(t)
	img := Build(t, SpecNamed(t, "ext4-default"))
	want := KernelWalk(t, img)
	got := map[string]Entry{}
	for k, v := range want {
		got[k] = v
	}
	e := got["files/size-4096"]
	e.Size++
	got["files/size-4096"] = e
	r := &recorder{TB: t}
	Compare(r, want, got, CompareOpts{})
	if len(r.msgs) != 1 || r.msgs[0] != "files/size-4096: Size: want 4096, got 4097" {
		t.Errorf("Compare of a changed size: %q", r.msgs)
	}
}

// TestKernelWalkEverySpec mounts every image and checks it against its
// source tree, which shows that each mke2fs variant plus Build's debugfs
// fix-ups produced what the tree meant.
func TestKernelWalkEverySpec(t *testing.T) {
	RequireKernelMount(t)
	for _, s := range specs(t) {
		if s.Tree == TreeLargeDir || s.Tree == TreeLargeDirLong || s.NoKernel {
			continue // covered by TestLargeDir; or the kernel cannot mount it
		}
		t.Run(s.Name, func(t *testing.T) {
			img := Build(t, s)
			kernel := comparable(KernelWalk(t, img), true)
			src := comparable(Walk(t, Source(t, s)), false)
			opts := CompareOpts{IgnoreAtime: true, IgnoreBtime: true, IgnoreCtime: true, IgnoreIno: true}
			sb, err := readSuperblock(img)
			if err != nil {
				t.Fatal(err)
			}
			if sb.inodeSize == 128 {
				// 128-byte inodes hold only 32-bit seconds: the times/
				// entries are truncated, as the kernel would do too.
				for p, e := range kernel {
					if strings.HasPrefix(p, "times/") && e.Mtime != src[p].Mtime {
						delete(kernel, p)
						delete(src, p)
					}
				}
			}
			if sb.blockSize != 4096 {
				// Segments are rounded to the image's blocks, the source
				// tree's to the host's.
				opts.IgnoreSegments = true
			}
			if sb.incompat&0x8000 != 0 { // inline_data
				// mke2fs 1.47.0 -d mangles sparse files on inline_data
				// images: a file ending in a hole is cut to the end of
				// its last data block, and a file starting with a hole
				// gets a data block at 0. The image, not the source, is
				// what readers are compared with, so only note it.
				for _, p := range []string{"sparse/ends-in-hole", "sparse/prealloc", "sparse/scattered"} {
					if k, s := kernel[p], src[p]; k.Size != s.Size || k.SHA256 != s.SHA256 {
						t.Logf("%s: mke2fs -d with inline_data: size %d, source %d", p, k.Size, s.Size)
					}
					delete(kernel, p)
					delete(src, p)
				}
			}
			if s.Name == "ext4-ea-inode" {
				e := kernel["xattrs/eainode"]
				if !bytes.Equal(e.Xattrs[EAInodeXattrName], EAInodeXattrValue()) {
					t.Errorf("ea_inode xattr: %d bytes", len(e.Xattrs[EAInodeXattrName]))
				}
				delete(e.Xattrs, EAInodeXattrName)
				if len(e.Xattrs) == 0 {
					e.Xattrs = nil
				}
				kernel["xattrs/eainode"] = e
			}
			Compare(t, src, kernel, opts)
			st := KernelStatfs(t, img)
			if int(st.Bsize) != sb.blockSize {
				t.Errorf("statfs bsize %d, superblock block size %d", st.Bsize, sb.blockSize)
			}
		})
	}
}

func TestLargeDir(t *testing.T) {
	if testing.Short() {
		t.Skip("large directory image is slow to build")
	}
	RequireKernelMount(t)
	img := Build(t, SpecNamed(t, "ext4-largedir"))
	kernel := KernelWalk(t, img)
	n := 0
	for p := range kernel {
		if strings.HasPrefix(p, "big/") {
			n++
		}
	}
	if n != LargeDirEntries {
		t.Errorf("big has %d entries, want %d", n, LargeDirEntries)
	}
	if _, ok := kernel["big/"+LargeDirName(99999)]; !ok {
		t.Errorf("missing %s", LargeDirName(99999))
	}
	out := Debugfs(t, img, "htree_dump /big")
	if !strings.Contains(out, "Indirect levels: 1") && !strings.Contains(out, "Indirect levels: 2") {
		t.Errorf("big is not a multi-level htree:\n%.500s", out)
	}
}

func TestDebugfsOracles(t *testing.T) {
	s := SpecNamed(t, "ext4-default")
	img := Build(t, s)

	st := DebugfsStat(t, img, "files/size-5242880")
	if st["Type"] != "regular" || st["Size"] != "5242880" || st["Mode"] != "0644" || st["Links"] != "1" {
		t.Errorf("stat files/size-5242880: %v", st)
	}
	if st["mtime"] == "" || st["mtime_nsec"] != "0" || !strings.Contains(st["mtime"], ":") {
		t.Errorf("stat mtime fields: %q %q", st["mtime"], st["mtime_nsec"])
	}
	ext := DebugfsExtents(t, img, "files/size-5242880")
	var blocks uint64
	for _, e := range ext {
		if e.Uninit {
			t.Errorf("unexpected uninit extent %+v", e)
		}
		blocks += e.Len
	}
	if blocks*4096 != 5<<20 {
		t.Errorf("extents of the 5 MiB file cover %d blocks: %+v", blocks, ext)
	}
	// One extent fits in the inode (no index blocks), so i_blocks, in
	// 512-byte units, is exactly the extents' blocks.
	if bc, _ := strconv.ParseUint(st["Blockcount"], 10, 64); bc != blocks*8 {
		t.Errorf("Blockcount %d, extents cover %d sectors", bc, blocks*8)
	}

	// The times Build wrote with debugfs decode as meant.
	tm := DebugfsStat(t, img, "times/post2038")
	if tm["mtime_sec"] != "4294979641" || tm["mtime_nsec"] != "500" || tm["atime_sec"] != "2147483648" || tm["atime_nsec"] != "1" {
		t.Errorf("times/post2038: %v", tm)
	}
	tm = DebugfsStat(t, img, "times/pre1970")
	if tm["mtime_sec"] != "-1000000000" || tm["mtime_nsec"] != "5" || tm["crtime_sec"] != strconv.Itoa(-1000000000-86400) {
		t.Errorf("times/pre1970: %v", tm)
	}

	if os.Geteuid() == 0 {
		if d := DebugfsStat(t, img, "devs/big-minor"); d["Device major/minor number"] != "259:70000" || d["Type"] != "block special" {
			t.Errorf("devs/big-minor: %v", d)
		}
	}
	if m := DebugfsStat(t, img, "modes/m0000"); m["Mode"] != "0000" || m["Type"] != "regular" {
		t.Errorf("modes/m0000: %v", m)
	}
	if l := DebugfsStat(t, img, "symlinks/len59"); l["Fast link dest"] != SymlinkTarget(59) {
		t.Errorf("symlinks/len59: %v", l)
	}
	if x := DebugfsStat(t, img, "xattrs/basic"); x["xattr:user.small"] != `(1) = "v"` {
		t.Errorf("xattrs/basic: %v", x)
	}
	if n := DebugfsStat(t, img, "names/with space"); n["Size"] != "10" {
		t.Errorf("names/with space: %v", n)
	}

	// Unwritten extents made by Build's debugfs fallocate.
	pre := DebugfsExtents(t, img, "sparse/prealloc")
	var uninit uint64
	for _, e := range pre {
		if e.Uninit {
			uninit += e.Len
		}
	}
	if uninit != (32<<10)/4096+(16<<10)/4096 {
		t.Errorf("sparse/prealloc extents: %+v", pre)
	}
	// Block-mapped files have no extents.
	if ext := DebugfsExtents(t, Build(t, SpecNamed(t, "ext3")), "files/size-5242880"); ext != nil {
		t.Errorf("ext3 file has extents: %+v", ext)
	}

	if got, want := DebugfsDump(t, img, "files/size-4097"), randBytes("files/size-4097", 4097); !bytes.Equal(got, want) {
		t.Errorf("dump of files/size-4097 differs")
	}
	if got := DebugfsDump(t, img, "modes/m0000"); string(got) != "m0000" {
		t.Errorf("dump of modes/m0000: %q", got)
	}

	if os.Geteuid() == 0 {
		RequireKernelMount(t)
		kernel := KernelWalk(t, img)
		e := kernel["files/size-5242880"]
		if st["Inode"] != strconv.FormatUint(e.Ino, 10) || st["Size"] != strconv.FormatInt(e.Size, 10) {
			t.Errorf("debugfs inode %s size %s, kernel %d %d", st["Inode"], st["Size"], e.Ino, e.Size)
		}
		u := kernel["times/y2400"]
		y := DebugfsStat(t, img, "times/y2400")
		if y["mtime_sec"] != strconv.FormatInt(u.Mtime.Sec, 10) || y["mtime_nsec"] != strconv.FormatInt(u.Mtime.Nsec, 10) ||
			y["crtime_sec"] != strconv.FormatInt(u.Btime.Sec, 10) {
			t.Errorf("times/y2400: debugfs %v, kernel %+v", y, u)
		}
	}
}

func TestDebugfsHash(t *testing.T) {
	for _, c := range []struct {
		alg, seed, name string
		hash, minor     uint32
	}{
		// Values from debugfs 1.47.0; they pin the invocation (numeric
		// -h, -s, "--" and quoting) rather than the algorithms.
		{"legacy", "", "hello", 0x32252546, 0},
		{"half_md4", "", "hello", 0x1746da32, 0x420013b5},
		{"half_md4", "00000000-0000-0000-0000-000000000000", "hello", 0x1746da32, 0x420013b5},
		{"half_md4", "66666666-7777-8888-9999-aaaaaaaaaaaa", "hello", 0xffd0ed2e, 0x1dfcde86},
		{"tea", "66666666-7777-8888-9999-aaaaaaaaaaaa", "with space", 0x13243766, 0x8276f374},
		{"legacy", "", "é日本", 0xc60465c0, 0},
		{"legacy_unsigned", "", "é日本", 0xb15c9af2, 0},
		{"legacy", "", "-dash", 0xf8abdd2c, 0},
		{"legacy", "", `a"b`, 0x5abc28aa, 0},
	} {
		h, m := DebugfsHash(t, c.alg, c.seed, c.name)
		if h != c.hash || m != c.minor {
			t.Errorf("%s %q %q: got %#x/%#x, want %#x/%#x", c.alg, c.seed, c.name, h, m, c.hash, c.minor)
		}
	}
}

// TestDebugfsHashMatchesHtree checks DebugfsHash against the hashes stored
// in a real htree leaf, so that the seed and algorithm plumbing is right.
func TestDebugfsHashMatchesHtree(t *testing.T) {
	for _, c := range []struct{ spec, alg string }{
		{"ext4-default", "half_md4"},
		{"ext4-hash-tea", "tea"},
		{"ext4-hash-legacy", "legacy"},
	} {
		img := Build(t, SpecNamed(t, c.spec))
		out := Debugfs(t, img, "htree_dump /dirs/many")
		// Leaf lines look like "Entry #0: Hash 0x...": the leaf entries
		// are "INO 0xHASH-MINOR (REC_LEN) NAME   INO 0x...".
		checked := 0
		for _, f := range strings.Split(out, "   ") {
			var ino uint64
			var hash, minor uint32
			var reclen int
			var name string
			if n, _ := fmt.Sscanf(strings.TrimSpace(f), "%d 0x%x-%x (%d) %s", &ino, &hash, &minor, &reclen, &name); n != 5 || !strings.HasPrefix(name, "entry-") {
				continue
			}
			// The fs hash is signed or unsigned per superblock flags;
			// ASCII names hash the same either way.
			h, m := DebugfsHash(t, c.alg, HashSeed, name)
			if h&^1 != hash&^1 || (c.alg != "legacy" && m != minor) {
				t.Errorf("%s: %s: debugfs dx_hash %#x-%#x, htree leaf %#x-%#x", c.spec, name, h, m, hash, minor)
			}
			if checked++; checked >= 3 {
				break
			}
		}
		if checked == 0 {
			t.Errorf("%s: no leaf entries parsed from htree_dump:\n%.800s", c.spec, out)
		}
	}
}

func TestNoToolSkips(t *testing.T) {
	// requireTools must skip, not fail, when a tool is missing.
	ok := t.Run("inner", func(t *testing.T) {
		requireTools(t, "testimg-no-such-tool")
		t.Error("requireTools did not skip")
	})
	if !ok {
		t.Error("inner test failed")
	}
	if _, err := exec.LookPath("testimg-no-such-tool"); err == nil {
		t.Skip("somebody installed testimg-no-such-tool")
	}
}

// TestDebugfsBatch checks that one batched run gives each command the same
// output as separate runs.
func TestDebugfsBatch(t *testing.T) {
	img := Build(t, Spec{Name: "batch", MkfsArgs: []string{"-t", "ext4"}, SizeMB: 16, Tree: TreeSmall})
	paths := []string{".", "hello.txt", "dir/data", "link", "dir"}
	stats := DebugfsStats(t, img, paths)
	dumps := DebugfsDumps(t, img, []string{"hello.txt", "dir/data"})
	exts := DebugfsExtentsBatch(t, img, []string{"dir/data", "hello.txt"})
	for i, p := range paths {
		one := DebugfsStat(t, img, p)
		if fmt.Sprint(one) != fmt.Sprint(stats[i]) {
			t.Errorf("%s: batched stat %v, single %v", p, stats[i], one)
		}
	}
	if !bytes.Equal(dumps[0], DebugfsDump(t, img, "hello.txt")) || !bytes.Equal(dumps[1], DebugfsDump(t, img, "dir/data")) {
		t.Errorf("batched dump differs from single dump")
	}
	if fmt.Sprint(exts[0]) != fmt.Sprint(DebugfsExtents(t, img, "dir/data")) || len(exts[0]) == 0 {
		t.Errorf("batched ex %v differs from single ex", exts[0])
	}
}
