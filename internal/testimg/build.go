//go:build linux

package testimg

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// Spec describes one test image: how to make the file system and which tree
// to copy into it.
type Spec struct {
	// Name identifies the spec in test names and image file names,
	// e.g. "ext4-default".
	Name string
	// MkfsArgs are mke2fs arguments without the image path, the size, and
	// the options Build always adds (-q -F -U -d and -E hash_seed=, which
	// is merged into any -E given here).
	MkfsArgs []string
	// Tune2fsArgs, if any, are passed to tune2fs on the image right after
	// mke2fs. mke2fs 1.47.0 -d writes quota files that count only the root
	// and lost+found, not the copied tree, so quotas are switched on with
	// tune2fs (which counts everything) instead.
	Tune2fsArgs []string
	// SizeMB is the image size in MiB. Images are sparse files, so unused
	// space costs nothing on disk.
	SizeMB int
	// Tree selects the generated source tree.
	Tree TreeKind
	// NeedsRoot reports that the tree has parts only root can make (device
	// nodes, chown, trusted.* and security.* xattrs). Without root Build
	// generates TreeFull without them rather than skipping; TreeLargeDir,
	// which needs a read-write kernel mount, is skipped.
	NeedsRoot bool
	// Htree makes Build run e2fsck -fyD after mke2fs. mke2fs -d writes
	// every directory as a linear list, so this is the only way to get
	// hash-tree (dir_index) directories; specs without it keep multi-block
	// linear directories, which readers must handle too.
	Htree bool
	// NoKernel marks a format the kernel here cannot mount (64 KiB blocks
	// on a 4 KiB-page machine): only debugfs can be the oracle.
	NoKernel bool
}

// UUID is the file system UUID of every built image (mke2fs -U), fixed so
// that images and checksums seeded from it are reproducible.
const UUID = "5afef5a0-7e57-4d1a-9e00-000000000001"

// HashSeed is the directory hash seed of every built image
// (mke2fs -E hash_seed=), fixed so that htree layouts are reproducible.
const HashSeed = "5afef5a0-7e57-4d1a-9e00-0000000000a5"

// MkfsConfig is the mke2fs.conf that Build passes through MKE2FS_CONFIG.
// It is upstream's default without the size-based usage types' overrides,
// so that a 64 MiB image gets 4 KiB blocks, 256-byte inodes and one inode
// per 16 KiB on every distribution (Debian's "small" type would otherwise
// switch to 1 KiB blocks below 512 MiB). The size-based usage types only
// repeat a default, because an undefined or empty one makes mke2fs warn
// "fs_type small is not defined". The hash_tea and hash_legacy usage types
// (mke2fs -T) exist because mke2fs has no command line option for the
// directory hash algorithm: "hash_alg" is a profile relation only.
const MkfsConfig = `[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	default_mntopts = acl,user_xattr
	enable_periodic_fsck = 0
	blocksize = 4096
	inode_size = 256
	inode_ratio = 16384

[fs_types]
	ext3 = {
		features = has_journal
	}
	ext4 = {
		features = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
	}
	hash_tea = {
		hash_alg = tea
	}
	hash_legacy = {
		hash_alg = legacy
	}
	floppy = {
		inode_ratio = 16384
	}
	small = {
		inode_ratio = 16384
	}
	default = {
		inode_ratio = 16384
	}
	big = {
		inode_ratio = 16384
	}
	huge = {
		inode_ratio = 16384
	}
`

// Matrix returns the standard set of image variants. Every spec builds with
// mke2fs 1.47.0. Specs that only make sense with several block groups set
// -g so that a 64 MiB image has them.
func Matrix() []Spec {
	full := func(name string, size int, htree bool, args ...string) Spec {
		return Spec{Name: name, MkfsArgs: args, SizeMB: size, Tree: TreeFull, NeedsRoot: true, Htree: htree}
	}
	return []Spec{
		// ext2/ext3 keep linear directories except ext3, which gets
		// htrees as ext3 with dir_index usually has.
		full("ext2", 64, false, "-t", "ext2", "-g", "4096"),
		full("ext3", 64, true, "-t", "ext3", "-g", "4096"),
		// 1 KiB blocks put the triple-indirect range at 64 MiB, inside
		// the sparse files' reach.
		full("ext3-1k", 64, true, "-t", "ext3", "-b", "1024"),
		// Inodes larger than 256 bytes: more room for in-inode xattrs.
		full("ext4-1024inode", 64, true, "-t", "ext4", "-I", "1024"),
		full("ext4-default", 64, true, "-t", "ext4"),
		full("ext4-1k", 64, true, "-t", "ext4", "-b", "1024"),
		full("ext4-2k", 64, true, "-t", "ext4", "-b", "2048"),
		full("ext4-128inode", 64, true, "-t", "ext4", "-I", "128"),
		full("ext4-inline", 64, true, "-t", "ext4", "-O", "inline_data"),
		full("ext4-bigalloc", 64, true, "-t", "ext4", "-O", "bigalloc", "-C", "16384"),
		full("ext4-no64bit", 64, true, "-t", "ext4", "-O", "^64bit", "-g", "4096"),
		full("ext4-uninit-bg", 64, true, "-t", "ext4", "-O", "^metadata_csum,uninit_bg", "-g", "4096"),
		full("ext4-ea-inode", 64, true, "-t", "ext4", "-O", "ea_inode"),
		full("ext4-metadata-csum-seed", 64, true, "-t", "ext4", "-O", "metadata_csum_seed"),
		// 128 groups of 1 MiB with 64-byte descriptors: two meta_bg groups.
		full("ext4-flex-metabg", 128, true, "-t", "ext4", "-O", "meta_bg,^resize_inode", "-g", "256"),
		full("ext4-sparse-super2", 64, true, "-t", "ext4", "-O", "sparse_super2", "-g", "4096"),
		// mke2fs takes the hash algorithm only from its profile: see
		// MkfsConfig's hash_* usage types.
		full("ext4-hash-tea", 64, true, "-t", "ext4", "-T", "hash_tea"),
		full("ext4-hash-legacy", 64, true, "-t", "ext4", "-T", "hash_legacy"),
		{
			Name:        "ext4-project-quota",
			MkfsArgs:    []string{"-t", "ext4", "-O", "project"},
			Tune2fsArgs: []string{"-O", "quota", "-Q", "usrquota,grpquota,prjquota"},
			SizeMB:      64,
			Tree:        TreeFull,
			NeedsRoot:   true,
			Htree:       true,
		},
		full("ext4-orphan-file", 64, true, "-t", "ext4", "-O", "orphan_file"),
		full("ext4-mmp", 64, true, "-t", "ext4", "-O", "mmp"),
		full("ext4-no-flex-bg", 64, true, "-t", "ext4", "-O", "^flex_bg", "-g", "4096"),
		full("ext2-no-filetype", 64, false, "-t", "ext2", "-O", "^filetype"),
		{
			Name:      "ext4-64k",
			MkfsArgs:  []string{"-t", "ext4", "-b", "65536"},
			SizeMB:    256,
			Tree:      TreeFull,
			NeedsRoot: true,
			Htree:     true,
			NoKernel:  true,
		},
		{
			// The kernel creates the big directory and its htree; e2fsck
			// -D would only rewrite it in sorted, packed form.
			Name:      "ext4-largedir",
			MkfsArgs:  []string{"-t", "ext4", "-O", "large_dir", "-N", "120000"},
			SizeMB:    256,
			Tree:      TreeLargeDir,
			NeedsRoot: true,
		},
		{
			// 1 KiB blocks and names of over 200 bytes: three entries
			// per leaf, so 100,000 of them need a three-level htree.
			Name:      "ext4-largedir-3level",
			MkfsArgs:  []string{"-t", "ext4", "-b", "1024", "-O", "large_dir", "-N", "120000"},
			SizeMB:    256,
			Tree:      TreeLargeDirLong,
			NeedsRoot: true,
		},
	}
}

// SpecNamed returns the spec of Matrix called name, failing t when there
// is none.
func SpecNamed(t testing.TB, name string) Spec {
	t.Helper()
	for _, s := range Matrix() {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no spec %q in testimg.Matrix", name)
	return Spec{}
}

// key identifies a spec for the build cache; Spec has a slice and so is not
// comparable itself.
func (s Spec) key() string {
	return fmt.Sprintf("%s\x00%q\x00%q\x00%d\x00%v\x00%v", s.Name, s.MkfsArgs, s.Tune2fsArgs, s.SizeMB, s.Tree, s.Htree)
}

// blockSize is the block size the spec asks for (mke2fs -b), defaulting to
// MkfsConfig's 4096. The tree depends on it because symlink targets and
// xattr values must fit in one block.
func (s Spec) blockSize() int {
	for i := 0; i+1 < len(s.MkfsArgs); i++ {
		if s.MkfsArgs[i] == "-b" {
			if n, err := strconv.Atoi(s.MkfsArgs[i+1]); err == nil {
				return n
			}
		}
	}
	return 4096
}

var (
	mu       sync.Mutex
	workDir  string
	sources  = map[string]*genTree{}
	images   = map[string]string{}
	failures = map[string]string{}
)

// KeepEnv names the environment variable that, when non-empty, makes
// Cleanup keep the images and trees (and say where) for inspection with
// debugfs after a failing test.
const KeepEnv = "TESTIMG_KEEP"

// Cleanup removes every image and source tree this process built. TestMain
// should call it after m.Run; later Builds start afresh.
func Cleanup() {
	mu.Lock()
	defer mu.Unlock()
	if workDir != "" {
		if os.Getenv(KeepEnv) != "" {
			fmt.Fprintf(os.Stderr, "testimg: %s set: keeping %s\n", KeepEnv, workDir)
		} else {
			os.RemoveAll(workDir)
		}
	}
	workDir = ""
	removeLayout()
	sources = map[string]*genTree{}
	images = map[string]string{}
	failures = map[string]string{}
}

// ensureWorkDir creates the per-process directory that holds source trees,
// images and the mke2fs config, preferring a file system that takes user
// xattrs so that the trees can carry them.
func ensureWorkDir(t testing.TB) string {
	t.Helper()
	if workDir != "" {
		return workDir
	}
	var candidates []string
	for _, d := range []string{os.TempDir(), "/var/tmp", "/dev/shm"} {
		dir, err := os.MkdirTemp(d, "testimg-")
		if err != nil {
			continue
		}
		if lsetxattr(dir, "user.testimg-probe", []byte("x"), 0) == nil {
			for _, c := range candidates {
				os.RemoveAll(c)
			}
			workDir = dir
			break
		}
		candidates = append(candidates, dir)
	}
	if workDir == "" {
		if len(candidates) == 0 {
			t.Fatalf("testimg: cannot create a temp dir")
		}
		workDir = candidates[0]
		for _, c := range candidates[1:] {
			os.RemoveAll(c)
		}
		t.Logf("testimg: no temp dir takes user xattrs; trees will have none")
	}
	if err := os.WriteFile(filepath.Join(workDir, "mke2fs.conf"), []byte(MkfsConfig), 0o644); err != nil {
		t.Fatalf("testimg: %v", err)
	}
	return workDir
}

// requireTools skips the test if a command is missing.
func requireTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := lookTool(tool); err != nil {
			t.Skipf("testimg: %s not available: %v", tool, err)
		}
	}
}

// lookTool finds a tool in PATH or the sbin directories, which non-login
// root shells and CI environments often leave out of PATH.
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH or sbin directories", name)
}

// toolEnv is the environment for e2fsprogs: no E2FSPROGS_FAKE_TIME (which
// would make mke2fs write a fake time), our own mke2fs.conf, no pager.
func toolEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "E2FSPROGS_FAKE_TIME", "MKE2FS_CONFIG", "DEBUGFS_PAGER", "PAGER", "E2FSCK_CONFIG":
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "DEBUGFS_PAGER=__none__", "PAGER=__none__")
	if workDir != "" {
		env = append(env, "MKE2FS_CONFIG="+filepath.Join(workDir, "mke2fs.conf"))
	}
	return env
}

// runTool runs an e2fsprogs tool and returns stdout, stderr and the exit
// error.
func runTool(name string, args ...string) (string, string, error) {
	path, err := lookTool(name)
	if err != nil {
		return "", "", err
	}
	cmd := exec.Command(path, args...)
	cmd.Env = toolEnv()
	// A test binary killed by its timeout must not leave a mke2fs or
	// e2fsck running on (and a temp dir full of) images nobody wants.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	return stdout.String(), stderr.String(), err
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// Source returns the generated source tree that Build copies into images of
// spec s, generating it if needed. It is shared by every spec with the same
// tree kind and block size and must not be modified. Reading it (with Walk)
// is fine; Walk does not change atimes.
func Source(t testing.TB, s Spec) string {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	return sourceLocked(t, s).dir
}

func sourceLocked(t testing.TB, s Spec) *genTree {
	t.Helper()
	p := treeParams{kind: s.Tree, blockSize: s.blockSize()}
	if tr, ok := sources[p.key()]; ok {
		return tr
	}
	if msg, ok := failures["src:"+p.key()]; ok {
		t.Fatalf("testimg: source tree %s failed earlier: %s", p.key(), msg)
	}
	dir := filepath.Join(ensureWorkDir(t), "src-"+p.key())
	failures["src:"+p.key()] = "generation did not finish"
	tr := generateTree(t, dir, p)
	delete(failures, "src:"+p.key())
	for _, n := range tr.notes {
		t.Logf("testimg: %s", n)
	}
	sources[p.key()] = tr
	return tr
}

// Build returns the path of an image built for s, building it on first use.
// Images are cached per process (same Spec, same image) under one temp dir
// that Cleanup removes, so TestMain should call Cleanup. Callers must not
// modify the image; mount it read-only.
//
// Building runs, in order:
//  1. mke2fs -q -F MkfsArgs -U UUID -E hash_seed=HashSeed[,MkfsArgs' -E]
//     -d SRC IMG on a sparse file of SizeMB, with MKE2FS_CONFIG=MkfsConfig,
//     then tune2fs Tune2fsArgs IMG if there are any;
//  2. debugfs -w to restore what mke2fs -d cannot copy: nanosecond,
//     pre-1970, post-2038 and creation times of the "times/" entries (only
//     with inodes larger than 128 bytes), unwritten extents in
//     "sparse/prealloc" (only with extents: blocks covering bytes
//     16K..48K inside the file and 80K..96K past its end; not with quotas,
//     which debugfs would not update), and the 20000-byte
//     EAInodeXattrName on "xattrs/eainode" (only with ea_inode), and
//     mode 0000 of "modes/m0000" when not root (mke2fs could not read the
//     file, so the source has 0600);
//  3. e2fsck -fn, which must find nothing to fix;
//  4. e2fsck -fyD if s.Htree, which turns multi-block directories into hash
//     trees.
//
// For TreeLargeDir, between steps 1 and 2 the image is mounted read-write
// (root only) and the kernel creates the 100,000 entries of "big".
//
// A failure is remembered, so later Builds of the same spec fail at once.
func Build(t testing.TB, s Spec) string {
	t.Helper()
	requireTools(t, "mke2fs", "debugfs", "e2fsck")
	if len(s.Tune2fsArgs) > 0 {
		requireTools(t, "tune2fs")
	}
	if s.Tree == TreeLargeDir || s.Tree == TreeLargeDirLong {
		// Checked before locking so that a skip is not taken for a
		// failed build.
		RequireKernelMount(t)
	}
	mu.Lock()
	defer mu.Unlock()
	key := s.key()
	if img, ok := images[key]; ok {
		return img
	}
	if msg, ok := failures[key]; ok {
		t.Fatalf("testimg: build of %s failed earlier: %s", s.Name, msg)
	}
	failures[key] = "build did not finish"
	defer func() {
		// A skip (say, no loop device for TestLargeDir's kernel fill)
		// is not a failure: let the next caller try, and skip, again.
		if t.Skipped() {
			delete(failures, key)
		}
	}()
	img := build(t, s)
	delete(failures, key)
	images[key] = img
	return img
}

func build(t testing.TB, s Spec) string {
	t.Helper()
	if s.SizeMB <= 0 {
		t.Fatalf("testimg: spec %s: SizeMB must be positive", s.Name)
	}
	tr := sourceLocked(t, s)
	if err := applyTimes(tr.dir, tr.times); err != nil {
		t.Fatalf("testimg: %v", err)
	}
	sum := sha256.Sum256([]byte(s.key()))
	img := filepath.Join(ensureWorkDir(t), unsafeName.ReplaceAllString(s.Name, "_")+"-"+hex.EncodeToString(sum[:4])+".img")
	os.Remove(img)
	f, err := os.Create(img)
	if err != nil {
		t.Fatalf("testimg: %v", err)
	}
	if err := f.Truncate(int64(s.SizeMB) << 20); err != nil {
		f.Close()
		t.Fatalf("testimg: %v", err)
	}
	f.Close()

	args := []string{"-q", "-F"}
	extended := []string{"hash_seed=" + HashSeed}
	for i := 0; i < len(s.MkfsArgs); i++ {
		// mke2fs keeps only the last -E, so ours and the spec's are merged.
		if s.MkfsArgs[i] == "-E" && i+1 < len(s.MkfsArgs) {
			extended = append(extended, s.MkfsArgs[i+1])
			i++
			continue
		}
		args = append(args, s.MkfsArgs[i])
	}
	args = append(args, "-U", UUID, "-E", strings.Join(extended, ","), "-d", tr.dir, img)
	if out, errOut, err := runTool("mke2fs", args...); err != nil {
		t.Fatalf("testimg: mke2fs %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
	}

	if len(s.Tune2fsArgs) > 0 {
		targs := append(append([]string{}, s.Tune2fsArgs...), img)
		if out, errOut, err := runTool("tune2fs", targs...); err != nil {
			t.Fatalf("testimg: tune2fs %s: %v\n%s%s", strings.Join(targs, " "), err, out, errOut)
		}
	}
	if tr.fillDir != "" {
		var fillErr error
		withMount(t, img, true, func(mnt string) {
			fillErr = fillLargeDir(filepath.Join(mnt, filepath.FromSlash(tr.fillDir)), tr.fillName)
		})
		if fillErr != nil {
			t.Fatalf("testimg: filling %s in %s: %v", tr.fillDir, s.Name, fillErr)
		}
	}
	sb, err := readSuperblock(img)
	if err != nil {
		t.Fatalf("testimg: %s: %v", img, err)
	}
	if cmds := fixupCommands(tr, sb); len(cmds) > 0 {
		cmdFile := img + ".debugfs"
		if err := os.WriteFile(cmdFile, []byte(strings.Join(cmds, "\n")+"\n"), 0o644); err != nil {
			t.Fatalf("testimg: %v", err)
		}
		out, errOut, err := runTool("debugfs", "-w", "-f", cmdFile, img)
		if err != nil || debugfsErrors(errOut) != "" {
			t.Fatalf("testimg: debugfs fix-ups on %s: %v\n%s\nstdout:\n%s", s.Name, err, errOut, out)
		}
		os.Remove(cmdFile)
	}
	if tr.eaInodePath != "" && sb.incompat&incompatEAInode != 0 {
		// A separate -R run: debugfs -f reads command lines of at most
		// 8 KiB, and ea_set -f reads at most one block of the value file.
		cmd := fmt.Sprintf("ea_set %s %s %s", debugfsPath(tr.eaInodePath), EAInodeXattrName, EAInodeXattrValue())
		out, errOut, err := runTool("debugfs", "-w", "-R", cmd, img)
		if err != nil || debugfsErrors(errOut) != "" {
			t.Fatalf("testimg: debugfs ea_set on %s: %v\n%s%s", s.Name, err, errOut, out)
		}
		// The kernel charges an EA inode's blocks to the owning inode's
		// i_blocks (and e2fsck insists on it); debugfs does not.
		st := DebugfsStat(t, img, tr.eaInodePath)
		blocks, err := strconv.ParseUint(st["Blockcount"], 10, 64)
		if err != nil {
			t.Fatalf("testimg: Blockcount of %s: %v", tr.eaInodePath, err)
		}
		bs := uint64(sb.blockSize)
		blocks += (EAInodeXattrSize + bs - 1) / bs * (bs / 512)
		cmd = fmt.Sprintf("sif %s blocks %d", debugfsPath(tr.eaInodePath), blocks)
		if out, errOut, err := runTool("debugfs", "-w", "-R", cmd, img); err != nil || debugfsErrors(errOut) != "" {
			t.Fatalf("testimg: debugfs %s on %s: %v\n%s%s", cmd, s.Name, err, errOut, out)
		}
	}
	// Check read-only before -D, so that -y cannot quietly repair a
	// mistake of the steps above and hide it.
	if out, errOut, err := runTool("e2fsck", "-fn", img); err != nil {
		t.Fatalf("testimg: e2fsck -fn on %s: %v\n%s%s", s.Name, err, out, errOut)
	}
	if s.Htree {
		out, errOut, err := runTool("e2fsck", "-fyD", img)
		var ee *exec.ExitError
		// Exit 1 means "file system modified", which -D always does.
		if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 1) {
			t.Fatalf("testimg: e2fsck -fyD on %s: %v\n%s%s", s.Name, err, out, errOut)
		}
	}
	return img
}

// superblock holds the few superblock fields Build and the kernel oracle
// need, read directly so that no tool output has to be parsed.
type superblock struct {
	inodeSize                  int
	compat, incompat, roCompat uint32
	blockSize                  int
}

const (
	compatHasJournal = 0x4
	incompatExtents  = 0x40
	incompatEAInode  = 0x400
	roCompatQuota    = 0x100
)

func readSuperblock(img string) (superblock, error) {
	f, err := os.Open(img)
	if err != nil {
		return superblock{}, err
	}
	defer f.Close()
	b := make([]byte, 1024)
	if _, err := f.ReadAt(b, 1024); err != nil {
		return superblock{}, err
	}
	le := binary.LittleEndian
	if le.Uint16(b[0x38:]) != 0xef53 {
		return superblock{}, errors.New("no ext2/3/4 superblock magic")
	}
	sb := superblock{
		inodeSize: 128,
		compat:    le.Uint32(b[0x5c:]),
		incompat:  le.Uint32(b[0x60:]),
		roCompat:  le.Uint32(b[0x64:]),
		blockSize: 1024 << le.Uint32(b[0x18:]),
	}
	if le.Uint32(b[0x4c:]) >= 1 { // dynamic revision has s_inode_size
		sb.inodeSize = int(le.Uint16(b[0x58:]))
	}
	return sb, nil
}

// encodeTime splits t into ext4's 32-bit seconds and the extra word
// (nanoseconds << 2 | epoch bits), as the kernel writes them.
func encodeTime(t Time) (lo, extra uint32) {
	lo = uint32(t.Sec)
	epoch := uint32((t.Sec-int64(int32(lo)))>>32) & 3
	return lo, uint32(t.Nsec)<<2 | epoch
}

func fixupCommands(tr *genTree, sb superblock) []string {
	var cmds []string
	for _, f := range tr.timeFixes {
		p := debugfsPath(f.path)
		for _, x := range []struct {
			field string
			tm    Time
		}{{"atime", f.atime}, {"mtime", f.mtime}, {"crtime", f.btime}} {
			lo, extra := encodeTime(x.tm)
			if sb.inodeSize <= 128 {
				// No extra fields and no crtime: store what the kernel
				// would, the low 32 bits of the seconds.
				if x.field != "crtime" {
					cmds = append(cmds, fmt.Sprintf("sif %s %s_lo 0x%08x", p, x.field, lo))
				}
				continue
			}
			if x.field == "crtime" && x.tm.IsZero() {
				continue
			}
			cmds = append(cmds,
				fmt.Sprintf("sif %s %s_lo 0x%08x", p, x.field, lo),
				fmt.Sprintf("sif %s %s_extra 0x%08x", p, x.field, extra))
		}
	}
	for _, f := range tr.modeFixes {
		cmds = append(cmds, fmt.Sprintf("sif %s mode 0%o", debugfsPath(f.path), f.mode))
	}
	// Not with quotas: debugfs allocates without charging them, which
	// e2fsck then reports.
	if tr.prealloc != "" && sb.incompat&incompatExtents != 0 && sb.roCompat&roCompatQuota == 0 {
		bs := sb.blockSize
		p := debugfsPath(tr.prealloc)
		cmds = append(cmds,
			fmt.Sprintf("fallocate %s %d %d", p, (16<<10)/bs, (48<<10)/bs-1),
			fmt.Sprintf("fallocate %s %d %d", p, (80<<10)/bs, (96<<10)/bs-1))
	}
	return cmds
}
