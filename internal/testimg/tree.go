//go:build linux

package testimg

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TreeKind selects which source tree Build generates and copies into an
// image with mke2fs -d.
type TreeKind int

const (
	// TreeFull exercises as much of the format as mke2fs -d (plus Build's
	// post-processing) can produce. Its top-level directories are:
	//
	//	files/    random content of sizes 0 1 59 60 61 100 4095 4096 4097
	//	          102400 5242880 ("size-N"), and 12 blocks + 1 byte
	//	          ("direct-plus-1")
	//	sparse/   "pieces" (data at 0, 1 MiB, 10 MiB+123), "scattered"
	//	          (300 MiB+17, four pieces, ends in a hole), "ends-in-hole",
	//	          "all-hole", "prealloc" (unwritten extents, see Build)
	//	links/    one inode named first, a/second, b/c/third
	//	names/    255-byte ASCII, 3- and 4-byte UTF-8 names, é 日本 😀,
	//	          names with spaces
	//	symlinks/ "lenN" targets of N = 1 59 60 61 100 1000 4000 bytes
	//	          (those shorter than a block; SymlinkTarget(N)), "max"
	//	          (block size - 1), dangling, to a dir, absolute
	//	devs/     null (c 1:3), loop0 (b 7:0), big-minor (b 259:70000),
	//	          max (c 4095:1048575) when root; fifo; socket
	//	dirs/     deep/level1/.../level8/bottom, many/ (500 entries, ten
	//	          of them directories), empty/
	//	modes/    0000 0777 0640 04755 02755 files, 02775 and 01777 dirs
	//	owners/   uid=gid 0 1000 65534 65536 100000 4000000000 (root only)
	//	times/    nsec, pre1970, post2038, y2400, dir, link with the
	//	          times Build writes with debugfs
	//	xattrs/   basic (user.small "v", user.empty "", user.v200,
	//	          trusted.x, security.test), big (3000 bytes, or 3/4 of a
	//	          smaller block), many (block size/64 20-byte values),
	//	          shared-1/-2 (identical sets), dir, acl-file (FileACL),
	//	          acl-dir (DirDefaultACL) with inherited children, eainode
	//
	// The root carries user.root. Parts the environment cannot make (device
	// nodes and owners without root, xattrs on a file system without them)
	// are left out with a t.Log note.
	TreeFull TreeKind = iota
	// TreeLargeDir is one directory "big" holding 100,000 empty files with
	// names of varied length (LargeDirName), plus a few regular files at
	// the root. It is meant for large_dir / multi-level htree tests. The
	// 100,000 files are created by the kernel in a read-write mount of the
	// new image, because mke2fs -d is quadratic in directory size; so
	// building it needs root (Build skips otherwise), the kernel writes the
	// htree, and the Source tree has "big" empty.
	TreeLargeDir
	// TreeSmall is a handful of files (a text file, a directory with a
	// 100 KiB file, a symlink, a sparse file) for quick smoke tests.
	TreeSmall
	// TreeLargeDirLong is TreeLargeDir with names of 208 to 255 bytes
	// (LargeDirLongName): with 1 KiB blocks only three fit in a leaf, so
	// the kernel needs a three-level htree (large_dir) to index them.
	TreeLargeDirLong
)

// String returns the Go name of the kind, used in image and tree names.
func (k TreeKind) String() string {
	switch k {
	case TreeFull:
		return "TreeFull"
	case TreeLargeDir:
		return "TreeLargeDir"
	case TreeSmall:
		return "TreeSmall"
	case TreeLargeDirLong:
		return "TreeLargeDirLong"
	}
	return fmt.Sprintf("TreeKind(%d)", int(k))
}

// LargeDirEntries is the number of files in "big" of TreeLargeDir.
const LargeDirEntries = 100000

// LargeDirName returns the name of the i-th file of TreeLargeDir's "big"
// directory, so that tests can look entries up without walking.
func LargeDirName(i int) string {
	return fmt.Sprintf("f%06d-%s", i, strings.Repeat("x", i%40))
}

// LargeDirLongName returns the name of the i-th file of
// TreeLargeDirLong's "big" directory: 208 to 255 bytes long.
func LargeDirLongName(i int) string {
	return fmt.Sprintf("f%06d-%s", i, strings.Repeat("y", 200+i%48))
}

// treeParams is what the generated tree depends on besides its kind: the
// block size limits symlink targets and xattr values that mke2fs can store.
type treeParams struct {
	kind      TreeKind
	blockSize int
}

func (p treeParams) key() string { return fmt.Sprintf("%v-%d", p.kind, p.blockSize) }

// timeFix asks Build to set an inode's times with debugfs after mke2fs,
// because mke2fs 1.47.0 -d keeps only the low 32 bits of seconds and drops
// nanoseconds and the creation time.
type timeFix struct {
	path                string
	atime, mtime, btime Time
}

// modeFix is a full st_mode that Build sets with debugfs.
type modeFix struct {
	path string
	mode uint32
}

// timeSet is the intended atime/mtime of one source path. Build reapplies
// all of them before each mke2fs run, because reading the tree (mke2fs
// itself does) moves atimes under relatime.
type timeSet struct {
	path         string
	atime, mtime Time
}

// genTree is a generated source tree and what Build must do to the image
// afterwards to reach the tree's intended state.
type genTree struct {
	dir       string
	times     []timeSet
	timeFixes []timeFix
	// prealloc is a file whose hole Build fills with unwritten extents
	// (debugfs fallocate), which mke2fs never produces.
	prealloc string
	// eaInodePath gets EAInodeXattrName (EAInodeXattrSize bytes) with
	// debugfs ea_set on images with ea_inode, because the source tree's file
	// system usually cannot hold such a value.
	eaInodePath string
	// fillDir is a directory that Build fills with fillLargeDir through a
	// read-write kernel mount after mke2fs (TreeLargeDir only), so the
	// source tree has it empty and the kernel builds its htree.
	fillDir string
	// fillName names the i-th file of fillDir.
	fillName func(int) string
	// modeFixes are modes Build sets with debugfs because mke2fs could not
	// read the file with its real mode (mode 0000 without root).
	modeFixes []modeFix
	notes     []string
}

// Names of things in TreeFull that tests may want to look up directly.
const (
	// EAInodeXattrName is the xattr that Build adds with debugfs to
	// "xattrs/eainode" in images with the ea_inode feature.
	EAInodeXattrName = "user.eainode"
	// EAInodeXattrSize is the size of EAInodeXattrName's value.
	EAInodeXattrSize = 20000
)

// EAInodeXattrValue returns the value Build stores as EAInodeXattrName. It
// is alphanumeric because debugfs takes it on its command line.
func EAInodeXattrValue() []byte {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	b := randBytes("ea-inode-value", EAInodeXattrSize)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return b
}

// randBytes returns n deterministic pseudo-random bytes keyed by name, so
// that every file's content is reproducible and distinct.
func randBytes(name string, n int) []byte {
	h := fnv.New64a()
	h.Write([]byte(name))
	r := rand.New(rand.NewPCG(h.Sum64(), 0x74657374696d67))
	b := make([]byte, (n+7)&^7)
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b[:n]
}

// gen carries the state of one tree generation.
type gen struct {
	t      testing.TB
	root   string
	tree   *genTree
	params treeParams
	isRoot bool
	xattr  bool // user.* xattrs work on the source file system
	acl    bool // system.posix_acl_* works on the source file system
	n      int  // counter for default times
}

func (g *gen) abs(rel string) string { return filepath.Join(g.root, filepath.FromSlash(rel)) }

func (g *gen) fatal(err error) {
	g.t.Helper()
	g.t.Fatalf("testimg: generating tree: %v", err)
}

func (g *gen) note(format string, args ...any) {
	g.tree.notes = append(g.tree.notes, fmt.Sprintf(format, args...))
}

// defaultTimes gives every entry distinct whole-second times inside the
// int32 range, which mke2fs copies exactly.
func (g *gen) defaultTimes(rel string) {
	g.n++
	g.tree.times = append(g.tree.times, timeSet{
		path:  rel,
		atime: Time{Sec: 1500000000 + int64(g.n)*1000 + 1},
		mtime: Time{Sec: 1400000000 + int64(g.n)*1000},
	})
}

func (g *gen) setTimes(rel string, atime, mtime Time) {
	for i := range g.tree.times {
		if g.tree.times[i].path == rel {
			g.tree.times[i].atime, g.tree.times[i].mtime = atime, mtime
			return
		}
	}
	g.tree.times = append(g.tree.times, timeSet{path: rel, atime: atime, mtime: mtime})
}

func (g *gen) mkdir(rel string, perm os.FileMode) {
	g.t.Helper()
	if err := os.Mkdir(g.abs(rel), perm); err != nil {
		g.fatal(err)
	}
	// Mkdir is subject to the umask; chmod makes the mode exact.
	if err := os.Chmod(g.abs(rel), perm); err != nil {
		g.fatal(err)
	}
	g.defaultTimes(rel)
}

func (g *gen) file(rel string, data []byte) {
	g.t.Helper()
	if err := os.WriteFile(g.abs(rel), data, 0o644); err != nil {
		g.fatal(err)
	}
	if err := os.Chmod(g.abs(rel), 0o644); err != nil {
		g.fatal(err)
	}
	g.defaultTimes(rel)
}

func (g *gen) randFile(rel string, n int) { g.t.Helper(); g.file(rel, randBytes(rel, n)) }

// sparse writes pieces of random data at the given offsets and truncates
// the file to size, leaving everything else as holes.
func (g *gen) sparse(rel string, size int64, pieces ...[2]int64) {
	g.t.Helper()
	f, err := os.OpenFile(g.abs(rel), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		g.fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		g.fatal(err)
	}
	for i, p := range pieces {
		if _, err := f.WriteAt(randBytes(fmt.Sprintf("%s#%d", rel, i), int(p[1])), p[0]); err != nil {
			g.fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		g.fatal(err)
	}
	g.defaultTimes(rel)
}

func (g *gen) symlink(target, rel string) {
	g.t.Helper()
	if err := os.Symlink(target, g.abs(rel)); err != nil {
		g.fatal(err)
	}
	g.defaultTimes(rel)
}

func (g *gen) link(oldRel, newRel string) {
	g.t.Helper()
	if err := os.Link(g.abs(oldRel), g.abs(newRel)); err != nil {
		g.fatal(err)
	}
}

func (g *gen) chmod(rel string, mode uint32) {
	g.t.Helper()
	// syscall.Chmod takes the raw mode so setuid/setgid/sticky bits pass
	// through without os.FileMode translation.
	if err := syscall.Chmod(g.abs(rel), mode); err != nil {
		g.fatal(err)
	}
}

func (g *gen) chown(rel string, uid, gid uint32) {
	g.t.Helper()
	if err := os.Lchown(g.abs(rel), int(uid), int(gid)); err != nil {
		g.fatal(err)
	}
}

func (g *gen) setxattr(rel, name string, value []byte) {
	g.t.Helper()
	if err := lsetxattr(g.abs(rel), name, value, 0); err != nil {
		g.fatal(fmt.Errorf("setxattr %s %s (%d bytes): %w", rel, name, len(value), err))
	}
}

// POSIX ACL entry tags, perms and the version of the Linux xattr form of an
// ACL, which is what setxattr/getxattr on system.posix_acl_* take and return
// (ext4 stores a shorter, version 1 form on disk and the kernel converts, so
// a reader has to convert too to match KernelWalk).
const (
	ACLUserObj  = 0x01
	ACLUser     = 0x02
	ACLGroupObj = 0x04
	ACLGroup    = 0x08
	ACLMask     = 0x10
	ACLOther    = 0x20
	// ACLUndefinedID is the id of entries that name no user or group.
	ACLUndefinedID = 0xffffffff
	// ACLXattrVersion is the version in the header of the Linux xattr form.
	ACLXattrVersion = 2
)

// ACLEntry is one entry of a POSIX ACL in its Linux xattr form.
type ACLEntry struct {
	Tag  uint16
	Perm uint16
	ID   uint32
}

// ACLXattr encodes entries in the Linux xattr form (little-endian u32
// version 2, then {u16 tag, u16 perm, u32 id} per entry), the value of
// system.posix_acl_access and system.posix_acl_default. Entries must be
// sorted by tag and id as the kernel requires.
func ACLXattr(entries ...ACLEntry) []byte {
	b := make([]byte, 4+8*len(entries))
	binary.LittleEndian.PutUint32(b, ACLXattrVersion)
	for i, e := range entries {
		o := 4 + 8*i
		binary.LittleEndian.PutUint16(b[o:], e.Tag)
		binary.LittleEndian.PutUint16(b[o+2:], e.Perm)
		binary.LittleEndian.PutUint32(b[o+4:], e.ID)
	}
	return b
}

// FileACL is the access ACL on TreeFull's "xattrs/acl-file":
// user::rw-, user:1000:r--, group::r--, mask::r--, other::---.
func FileACL() []byte {
	return ACLXattr(
		ACLEntry{ACLUserObj, 6, ACLUndefinedID},
		ACLEntry{ACLUser, 4, 1000},
		ACLEntry{ACLGroupObj, 4, ACLUndefinedID},
		ACLEntry{ACLMask, 4, ACLUndefinedID},
		ACLEntry{ACLOther, 0, ACLUndefinedID},
	)
}

// DirDefaultACL is the default ACL on TreeFull's "xattrs/acl-dir":
// user::rwx, user:1000:rwx, group::r-x, group:100:r-x, mask::rwx, other::r-x.
func DirDefaultACL() []byte {
	return ACLXattr(
		ACLEntry{ACLUserObj, 7, ACLUndefinedID},
		ACLEntry{ACLUser, 7, 1000},
		ACLEntry{ACLGroupObj, 5, ACLUndefinedID},
		ACLEntry{ACLGroup, 5, 100},
		ACLEntry{ACLMask, 7, ACLUndefinedID},
		ACLEntry{ACLOther, 5, ACLUndefinedID},
	)
}

// SymlinkTarget returns the deterministic target of length n used for the
// symlinks of TreeFull ("symlinks/lenN").
func SymlinkTarget(n int) string {
	const pat = "abcdefghi/"
	return strings.Repeat(pat, n/len(pat)+1)[:n]
}

// generateTree writes the tree for p into dir (which must not exist).
func generateTree(t testing.TB, dir string, p treeParams) *genTree {
	t.Helper()
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("testimg: %v", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("testimg: %v", err)
	}
	g := &gen{t: t, root: dir, tree: &genTree{dir: dir}, params: p, isRoot: os.Geteuid() == 0}
	g.defaultTimes(".")
	// mke2fs -d gives the root directory the current time instead of the
	// source's, so Build sets it with debugfs.
	g.tree.timeFixes = append(g.tree.timeFixes, timeFix{path: ".", atime: g.tree.times[0].atime, mtime: g.tree.times[0].mtime})
	g.probe()
	switch p.kind {
	case TreeFull:
		g.full()
	case TreeLargeDir:
		g.largeDir(LargeDirName)
	case TreeLargeDirLong:
		g.largeDir(LargeDirLongName)
	case TreeSmall:
		g.small()
	default:
		t.Fatalf("testimg: unknown tree kind %v", p.kind)
	}
	g.applyTimes()
	return g.tree
}

// probe finds out which xattr namespaces the source file system supports,
// so that a tree on, say, a tmpfs without user xattrs is still generated
// (without those parts) instead of failing every test.
func (g *gen) probe() {
	g.t.Helper()
	p := filepath.Join(g.root, ".probe")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		g.fatal(err)
	}
	defer os.Remove(p)
	g.xattr = lsetxattr(p, "user.testimg-probe", []byte("x"), 0) == nil
	if !g.xattr {
		g.note("source file system %s does not take user.* xattrs: xattrs left out of the tree", g.root)
	}
	g.acl = lsetxattr(p, "system.posix_acl_access", FileACL(), 0) == nil
	if !g.acl {
		g.note("source file system %s does not take POSIX ACLs: ACLs left out of the tree", g.root)
	}
	if !g.isRoot {
		g.note("not root: device nodes, chown, trusted.* and security.* xattrs left out of the tree")
	}
}

func (g *gen) applyTimes() {
	g.t.Helper()
	if err := applyTimes(g.root, g.tree.times); err != nil {
		g.fatal(err)
	}
}

func applyTimes(root string, times []timeSet) error {
	for _, ts := range times {
		if err := lutimesNano(filepath.Join(root, filepath.FromSlash(ts.path)), ts.atime, ts.mtime); err != nil {
			return fmt.Errorf("utimensat %s: %w", ts.path, err)
		}
	}
	return nil
}

func (g *gen) small() {
	g.file("hello.txt", []byte("hello, world\n"))
	g.mkdir("dir", 0o755)
	g.randFile("dir/data", 100*1024)
	g.mkdir("dir/empty", 0o755)
	g.symlink("hello.txt", "link")
	g.sparse("sparse", 1<<20, [2]int64{512 * 1024, 1000})
}

func (g *gen) largeDir(name func(int) string) {
	g.file("hello.txt", []byte("hello, world\n"))
	g.randFile("data", 100*1024)
	g.symlink("big/"+name(0), "first")
	// The entries themselves are created by Build through the kernel
	// (see genTree.fillDir): mke2fs -d inserts each name with a linear
	// scan of the directory, which takes over ten minutes for 100,000.
	g.mkdir("big", 0o755)
	g.tree.fillDir = "big"
	g.tree.fillName = name
}

// fillLargeDir creates the LargeDirEntries empty files in dir, which is in
// a read-write kernel mount of the image being built.
func fillLargeDir(dir string, name func(int) string) error {
	for i := 0; i < LargeDirEntries; i++ {
		// Raw open/close: os.Create's extra work is measurable at
		// 100,000 files.
		fd, err := syscall.Open(filepath.Join(dir, name(i)), syscall.O_CREAT|syscall.O_EXCL|syscall.O_WRONLY|syscall.O_CLOEXEC, 0o644)
		if err != nil {
			return err
		}
		syscall.Close(fd)
	}
	return nil
}

func (g *gen) full() {
	bs := g.params.blockSize

	// Regular files around every size boundary a reader cares about: empty,
	// the 60-byte i_block (inline data), one block, the 12 direct blocks
	// of block maps, and the single/double indirect ranges.
	g.mkdir("files", 0o755)
	for _, n := range []int{0, 1, 59, 60, 61, 100, 4095, 4096, 4097, 100 * 1024, 5 << 20} {
		g.randFile(fmt.Sprintf("files/size-%d", n), n)
	}
	// One byte into the first indirect block of a block-mapped file.
	g.randFile("files/direct-plus-1", 12*bs+1)

	// Sparse files. mke2fs -d copies them with SEEK_DATA/SEEK_HOLE and also
	// turns all-zero blocks into holes, so data pieces are random.
	g.mkdir("sparse", 0o755)
	g.sparse("sparse/pieces", 10<<20+123+1000,
		[2]int64{0, 4096}, [2]int64{1 << 20, 4096}, [2]int64{10<<20 + 123, 1000})
	g.sparse("sparse/scattered", 300<<20+17,
		[2]int64{64<<10 + 7, 100}, [2]int64{3<<20 + 5, 70000}, [2]int64{100 << 20, 4096},
		[2]int64{260<<20 + 1, 9000})
	g.sparse("sparse/ends-in-hole", 1<<20, [2]int64{0, 10})
	g.sparse("sparse/all-hole", 5<<20+1)
	g.sparse("sparse/prealloc", 64<<10, [2]int64{0, 8192})
	g.tree.prealloc = "sparse/prealloc"

	// Hard links: one inode, three names in three directories.
	g.mkdir("links", 0o755)
	g.mkdir("links/a", 0o755)
	g.mkdir("links/b", 0o755)
	g.mkdir("links/b/c", 0o755)
	g.randFile("links/first", 5000)
	g.link("links/first", "links/a/second")
	g.link("links/first", "links/b/c/third")

	// Names: maximal ASCII and multibyte names (255 bytes), non-ASCII,
	// spaces. No newlines or double quotes, which would break debugfs
	// command parsing in the oracles.
	g.mkdir("names", 0o755)
	for _, name := range []string{
		strings.Repeat("abcdefghij", 25) + "klmno", // 255 ASCII bytes
		strings.Repeat("日", 85),                    // 255 bytes, 3 per rune
		strings.Repeat("😀", 63) + "abc",            // 255 bytes, 4 per rune
		"é", "日本", "😀", "with space", "trailing space ", "-dash", "a.b.c",
	} {
		g.file("names/"+name, []byte(name))
	}

	// Symlinks of every storage class: fast (< 60 bytes, in i_block), the
	// 60-byte boundary, slow (in a data block) up to the longest target a
	// block can hold (mke2fs requires target length < block size).
	g.mkdir("symlinks", 0o755)
	for _, n := range []int{1, 59, 60, 61, 100, 1000, 4000} {
		if n < bs {
			g.symlink(SymlinkTarget(n), fmt.Sprintf("symlinks/len%d", n))
		}
	}
	// Linux caps targets at PATH_MAX-1 bytes, below a 64 KiB block.
	g.symlink(SymlinkTarget(min(bs-1, 4095)), "symlinks/max")
	g.symlink("no/such/file", "symlinks/dangling")
	g.symlink("../dirs", "symlinks/to-dir")
	g.symlink("/files/size-1", "symlinks/absolute")
	g.symlink("../files/size-100", "symlinks/to-file")

	// Special files. Device nodes need CAP_MKNOD; 259:70000 and
	// 4095:1048575 need ext4's new (32-bit) device encoding, 1:3 and 7:0
	// fit the old 8:8 one.
	g.mkdir("devs", 0o755)
	if g.isRoot {
		for _, d := range []struct {
			name         string
			mode         uint32
			major, minor uint32
		}{
			{"null", syscall.S_IFCHR | 0o666, 1, 3},
			{"loop0", syscall.S_IFBLK | 0o660, 7, 0},
			{"big-minor", syscall.S_IFBLK | 0o600, 259, 70000},
			{"max", syscall.S_IFCHR | 0o640, 4095, 1048575},
		} {
			rel := "devs/" + d.name
			if err := syscall.Mknod(g.abs(rel), d.mode, int(Mkdev(d.major, d.minor))); err != nil {
				g.fatal(fmt.Errorf("mknod %s: %w", rel, err))
			}
			g.chmod(rel, d.mode&0o7777)
			g.defaultTimes(rel)
		}
	}
	if err := syscall.Mkfifo(g.abs("devs/fifo"), 0o644); err != nil {
		g.fatal(err)
	}
	g.chmod("devs/fifo", 0o644)
	g.defaultTimes("devs/fifo")
	if err := g.socket("devs/socket"); err != nil {
		g.note("unix socket left out of the tree: %v", err)
	} else {
		g.defaultTimes("devs/socket")
	}

	// Directories: deep nesting, one with 500 entries (several blocks, and
	// an htree after Build's e2fsck -D), an empty one.
	g.mkdir("dirs", 0o755)
	deep := "dirs/deep"
	g.mkdir(deep, 0o755)
	for i := 1; i <= 8; i++ {
		deep += fmt.Sprintf("/level%d", i)
		g.mkdir(deep, 0o755)
	}
	g.file(deep+"/bottom", []byte("bottom\n"))
	g.mkdir("dirs/many", 0o755)
	for i := 0; i < 500; i++ {
		rel := fmt.Sprintf("dirs/many/entry-%03d-%s", i, strings.Repeat("m", i%50))
		if i%50 == 7 {
			g.mkdir(rel, 0o755)
		} else {
			g.file(rel, nil)
		}
	}
	g.mkdir("dirs/empty", 0o755)

	// Modes, including the bits os.FileMode would mangle.
	g.mkdir("modes", 0o755)
	for _, m := range []struct {
		name string
		dir  bool
		mode uint32
	}{
		{"m0000", false, 0o000}, {"m0777", false, 0o777}, {"m0640", false, 0o640},
		{"setuid", false, 0o4755}, {"setgid", false, 0o2755}, {"setgid-dir", true, 0o2775},
		{"sticky-dir", true, 0o1777},
	} {
		rel := "modes/" + m.name
		if m.dir {
			g.mkdir(rel, 0o755)
		} else {
			g.file(rel, []byte(m.name))
		}
		if m.mode&0o400 == 0 && !m.dir && !g.isRoot {
			// mke2fs -d must read the file: without
			// CAP_DAC_OVERRIDE that needs the owner's read bit.
			g.chmod(rel, m.mode|0o600)
			g.tree.modeFixes = append(g.tree.modeFixes, modeFix{rel, syscall.S_IFREG | m.mode})
			continue
		}
		g.chmod(rel, m.mode)
	}

	// Owners across the 16-bit boundary (ext4 splits uid/gid into low and
	// high halves) up to a full 32-bit value.
	g.mkdir("owners", 0o755)
	for _, id := range []uint32{0, 1000, 65534, 65536, 100000, 4000000000} {
		rel := fmt.Sprintf("owners/u%d", id)
		g.file(rel, []byte(rel))
		if g.isRoot {
			g.chown(rel, id, id)
		}
	}
	if g.isRoot {
		g.file("owners/mixed", []byte("mixed"))
		g.chown("owners/mixed", 100000, 4000000001)
		g.symlink("u1000", "owners/link-1000")
		g.chown("owners/link-1000", 1000, 1000)
	}

	// Times that mke2fs cannot copy: nanoseconds, before 1970, after 2038
	// (extra epoch bits), the year 2400. Build sets them with debugfs in
	// images with large inodes; with 128-byte inodes the image keeps
	// whatever mke2fs truncated them to.
	g.mkdir("times", 0o755)
	day := int64(86400)
	for _, tm := range []struct {
		rel          string
		kind         string
		atime, mtime Time
	}{
		{"times/nsec", "file", Time{1600000000, 987654321}, Time{1700000000, 123456789}},
		{"times/pre1970", "file", Time{-2147483648, 0}, Time{-1000000000, 5}},
		{"times/post2038", "file", Time{2147483648, 1}, Time{4294979641, 500}},
		{"times/y2400", "file", Time{13569465600, 999999999}, Time{13569465600 + day - 1, 1}},
		{"times/dir", "dir", Time{1234567890, 1}, Time{1234567891, 2}},
		{"times/link", "link", Time{1111111111, 111111111}, Time{1222222222, 222222222}},
	} {
		switch tm.kind {
		case "file":
			g.file(tm.rel, []byte(tm.rel))
		case "dir":
			g.mkdir(tm.rel, 0o755)
		case "link":
			g.symlink("nsec", tm.rel)
		}
		g.setTimes(tm.rel, tm.atime, tm.mtime)
		g.tree.timeFixes = append(g.tree.timeFixes, timeFix{
			path: tm.rel, atime: tm.atime, mtime: tm.mtime,
			btime: Time{Sec: tm.mtime.Sec - day, Nsec: 424242},
		})
	}

	// Xattrs of every size class: in the inode, in an external block,
	// spilling from one to the other, shared blocks, an EA inode (added by
	// Build with debugfs), and POSIX ACLs.
	g.mkdir("xattrs", 0o755)
	g.file("xattrs/eainode", []byte("ea inode holder\n"))
	g.tree.eaInodePath = "xattrs/eainode"
	if g.xattr {
		g.setxattr(".", "user.root", []byte("r"))
		g.file("xattrs/basic", []byte("basic\n"))
		g.setxattr("xattrs/basic", "user.small", []byte("v"))
		g.setxattr("xattrs/basic", "user.empty", nil)
		g.setxattr("xattrs/basic", "user.v200", randBytes("v200", 200))
		if g.isRoot {
			g.setxattr("xattrs/basic", "trusted.x", []byte("t"))
			g.setxattr("xattrs/basic", "security.test", []byte("s"))
		}
		// 3000 bytes needs an external block of 4 KiB; smaller blocks get
		// the largest value that still fits one block.
		big := 3000
		if bs < 4096 {
			big = bs * 3 / 4
		}
		g.file("xattrs/big", []byte("big\n"))
		g.setxattr("xattrs/big", "user.big", randBytes("big", big))
		g.file("xattrs/many", []byte("many\n"))
		// The source tree sits on a 4 KiB-block file system: one block of
		// xattrs is all it holds.
		for i := 0; i < min(bs, 4096)/64; i++ {
			g.setxattr("xattrs/many", fmt.Sprintf("user.many.%02d", i), randBytes(fmt.Sprintf("many%d", i), 20))
		}
		for _, s := range []string{"xattrs/shared-1", "xattrs/shared-2"} {
			g.file(s, []byte(s))
			g.setxattr(s, "user.shared.a", randBytes("shared-a", 300))
			g.setxattr(s, "user.shared.b", randBytes("shared-b", 300))
		}
		g.mkdir("xattrs/dir", 0o755)
		g.setxattr("xattrs/dir", "user.dir", []byte("on a directory"))
	}
	if g.acl {
		g.file("xattrs/acl-file", []byte("acl\n"))
		g.setxattr("xattrs/acl-file", "system.posix_acl_access", FileACL())
		g.mkdir("xattrs/acl-dir", 0o755)
		g.setxattr("xattrs/acl-dir", "system.posix_acl_default", DirDefaultACL())
		// Created inside the directory, so the host kernel derives an
		// access ACL (and a default ACL for the subdirectory) from the
		// default ACL: mke2fs copies what it finds.
		g.file("xattrs/acl-dir/inherited", []byte("inherited\n"))
		g.mkdir("xattrs/acl-dir/subdir", 0o755)
	}
}

// socket creates a unix socket node. mke2fs -d copies sockets as inodes of
// type S_IFSOCK, so they are part of the tree when they can be made.
func (g *gen) socket(rel string) error {
	path := g.abs(rel)
	if len(path) >= 108 {
		return errors.New("path too long for sockaddr_un")
	}
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		return err
	}
	return syscall.Chmod(path, 0o755)
}
