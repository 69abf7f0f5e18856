package journal

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"safefs/internal/ext4"
	"safefs/internal/testimg"
)

// cleanups run after all tests (shared images built once per binary).
var cleanups []func()

func TestMain(m *testing.M) {
	code := m.Run()
	for _, f := range cleanups {
		f()
	}
	testimg.Cleanup()
	os.Exit(code)
}

// image is an open image file with internal/ext4 on it (NoRecovery).
type image struct {
	path string
	f    *os.File
	size int64
	fsys *ext4.FS
}

func openImage(t testing.TB, p string) *image {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	fsys, err := ext4.Open(f, &ext4.Options{NoRecovery: true, DeviceSize: st.Size()})
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return &image{path: p, f: f, size: st.Size(), fsys: fsys}
}

func fileSHA(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// debugfsJournalBlocks lists the device blocks of the journal inode, as
// debugfs sees them (an oracle independent of this package's mapping).
func debugfsJournalBlocks(t testing.TB, img string) map[uint64]bool {
	t.Helper()
	out := debugfs(t, img, "blocks <8>")
	m := map[uint64]bool{}
	for _, w := range strings.Fields(out) {
		n, err := strconv.ParseUint(w, 10, 64)
		if err != nil {
			t.Fatalf("debugfs blocks <8>: unexpected %q", w)
		}
		m[n] = true
	}
	if len(m) == 0 {
		// debugfs cannot read the journal inode either; nothing is
		// skipped.
		t.Logf("debugfs blocks <8> on %s listed no blocks", img)
	}
	return m
}

// sbIgnore lists the superblock byte ranges ([start, end) within the 1024
// bytes at offset 1024) that the kernel rewrites after the replay, or
// keeps from before it, so that the replayed superblock cannot show them:
// free block and inode counts, which ext4_commit_super refreshes from its
// counters; mount and write times and the mount count; kbytes written; the
// error-information fields (s_error_count to s_last_error_func), which
// ext4_load_journal restores to their pre-replay values; s_state and the
// error codes, where the kernel records why it refused a mount; and the
// checksum.
// s_feature_incompat is compared with needs_recovery masked out, since the
// kernel clears it after replaying.
var sbIgnore = [][2]int{
	{0x0C, 0x14},   // s_free_blocks_count_lo, s_free_inodes_count
	{0x2C, 0x38},   // s_mtime, s_wtime, s_mnt_count, s_max_mnt_count
	{0x3A, 0x3C},   // s_state
	{0x158, 0x15C}, // s_free_blocks_count_hi
	{0x178, 0x180}, // s_kbytes_written
	{0x194, 0x200}, // s_error_count ... s_last_error_func
	{0x27A, 0x27C}, // s_first_error_errcode, s_last_error_errcode
	{0x3FC, 0x400}, // s_checksum
}

// e2fsprogsIgnore adds s_lastcheck, which e2fsprogs's journal replay
// (debugfs journal_run, e2fsck) rewrites.
var e2fsprogsIgnore = [][2]int{{0x40, 0x44}}

// sbDiff describes how two superblocks differ outside sbIgnore and extra,
// or "".
func sbDiff(want, got []byte, extra [][2]int) string {
	w := bytes.Clone(want)
	g := bytes.Clone(got)
	for _, r := range append(sbIgnore, extra...) {
		clear(w[r[0]:r[1]])
		clear(g[r[0]:r[1]])
	}
	le := binary.LittleEndian
	le.PutUint32(w[0x60:], le.Uint32(w[0x60:])&^ext4.IncompatRecover)
	le.PutUint32(g[0x60:], le.Uint32(g[0x60:])&^ext4.IncompatRecover)
	var diffs []string
	for i := range w {
		if w[i] != g[i] {
			diffs = append(diffs, fmt.Sprintf("0x%x: want %02x got %02x", i, w[i], g[i]))
		}
	}
	if len(diffs) > 8 {
		diffs = append(diffs[:8], "...")
	}
	return strings.Join(diffs, ", ")
}

// compareDevice compares got (the overlay) with the image at wantPath
// block by block over the whole filesystem, except the journal's own blocks
// (skip), and the superblock's fields in sbIgnore and extraIgnore. It returns the number of
// blocks compared.
func compareDevice(t testing.TB, got io.ReaderAt, wantPath string, bs uint32, blocks uint64, skip map[uint64]bool, extraIgnore ...[2]int) int {
	t.Helper()
	want, err := os.Open(wantPath)
	if err != nil {
		t.Fatal(err)
	}
	defer want.Close()
	sbBlock := uint64(1024 / bs) // block holding the primary superblock
	wb := make([]byte, bs)
	gb := make([]byte, bs)
	bad, compared := 0, 0
	for b := uint64(0); b < blocks; b++ {
		if skip[b] {
			continue
		}
		compared++
		off := int64(b) * int64(bs)
		if _, err := want.ReadAt(wb, off); err != nil {
			t.Fatalf("%s: block %d: %v", wantPath, b, err)
		}
		if _, err := got.ReadAt(gb, off); err != nil {
			t.Fatalf("overlay: block %d: %v", b, err)
		}
		if b == sbBlock {
			so := 1024 % int(bs)
			if d := sbDiff(wb[so:so+1024], gb[so:so+1024], extraIgnore); d != "" {
				t.Errorf("superblock differs: %s", d)
				bad++
			}
			copy(wb[so:so+1024], gb[so:so+1024])
		}
		if !bytes.Equal(wb, gb) {
			if bad++; bad <= 10 {
				i := 0
				for wb[i] == gb[i] {
					i++
				}
				t.Errorf("block %d differs from the oracle's (first at byte %d: want %02x, got %02x)", b, i, wb[i], gb[i])
			}
		}
	}
	if bad > 10 {
		t.Errorf("... %d differing blocks in all", bad)
	}
	return compared
}

// walkFS visits every name reachable from the root of fsys and describes it
// in testimg's terms, for comparison with the kernel's walk.
func walkFS(t testing.TB, fsys *ext4.FS) map[string]testimg.Entry {
	t.Helper()
	out := map[string]testimg.Entry{}
	seen := map[uint32]bool{}
	var walk func(ino uint32, p string)
	walk = func(ino uint32, p string) {
		if len(out) > 1<<20 {
			t.Fatal("walk: too many entries")
		}
		in, err := fsys.Inode(ino)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			return
		}
		e, err := entryOf(fsys, p, in)
		if err != nil {
			t.Errorf("%s: %v", p, err)
		}
		out[p] = e
		if !in.IsDir() || seen[ino] {
			return
		}
		seen[ino] = true
		type kid struct {
			name string
			ino  uint32
		}
		var kids []kid
		err = fsys.ReadDir(in, 0, func(d ext4.DirEntry) bool {
			if n := string(d.Name); n != "." && n != ".." {
				kids = append(kids, kid{n, d.Ino})
			}
			return true
		})
		if err != nil {
			t.Errorf("%s: readdir: %v", p, err)
		}
		for _, k := range kids {
			walk(k.ino, path.Join(p, k.name))
		}
	}
	walk(2, ".")
	return out
}

func toTime(ts ext4.Timestamp) testimg.Time { return testimg.Time{Sec: ts.Sec, Nsec: int64(ts.Nsec)} }

func entryOf(fsys *ext4.FS, p string, in *ext4.Inode) (testimg.Entry, error) {
	e := testimg.Entry{
		Path: p, Ino: uint64(in.Ino), Mode: uint32(in.Mode), Uid: in.Uid, Gid: in.Gid,
		Size: int64(in.Size), Nlink: uint64(in.LinksCount),
		Atime: toTime(in.Atime), Mtime: toTime(in.Mtime), Ctime: toTime(in.Ctime),
	}
	if in.HasCrtime {
		e.Btime = toTime(in.Crtime)
	}
	switch in.Type() {
	case ext4.ModeChar, ext4.ModeBlock:
		maj, mnr := in.Rdev()
		e.Rdev = testimg.Mkdev(maj, mnr)
	case ext4.ModeSymlink:
		tg, err := fsys.Readlink(in)
		if err != nil {
			return e, err
		}
		e.Target = string(tg)
	case ext4.ModeRegular:
		h := sha256.New()
		buf := make([]byte, 1<<20)
		for off := int64(0); off < int64(in.Size); {
			n, err := fsys.ReadAt(in, buf, off)
			h.Write(buf[:n])
			off += int64(n)
			if err == io.EOF {
				break
			}
			if err != nil {
				return e, err
			}
		}
		e.SHA256 = hex.EncodeToString(h.Sum(nil))
	}
	names, err := fsys.ListXattrs(in)
	if err != nil {
		return e, err
	}
	for _, n := range names {
		v, err := fsys.GetXattr(in, n)
		if errors.Is(err, ext4.ErrNoXattr) {
			continue
		}
		if err != nil {
			return e, fmt.Errorf("xattr %s: %w", n, err)
		}
		if e.Xattrs == nil {
			e.Xattrs = map[string][]byte{}
		}
		e.Xattrs[n] = v
	}
	return e, nil
}

// tool runs an e2fsprogs tool and returns its output; the test fails if it
// exits non-zero, and skips if the tool is missing.
func tool(t testing.TB, name string, args ...string) string {
	t.Helper()
	p, err := testimg.FindTool(name)
	if err != nil {
		t.Skipf("%s not available: %v", name, err)
	}
	cmd := exec.Command(p, args...)
	cmd.Env = append(os.Environ(), "DEBUGFS_PAGER=__none__", "PAGER=__none__")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// debugfs runs a read-only debugfs command in catastrophic mode (-c),
// which does not read the allocation bitmaps: a dirty image's bitmaps may
// fail their checksums until the journal is replayed.
func debugfs(t testing.TB, img, cmd string) string {
	t.Helper()
	return tool(t, "debugfs", "-c", "-R", cmd, img)
}

// journalFeatures is the "Journal features" line of dumpe2fs -h.
func journalFeatures(t testing.TB, img string) string {
	t.Helper()
	for _, l := range strings.Split(tool(t, "dumpe2fs", "-h", img), "\n") {
		if v, ok := strings.CutPrefix(l, "Journal features:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// recoverImage runs Recover on an image file.
func recoverImage(t testing.TB, p string) (*image, *Result, error) {
	t.Helper()
	img := openImage(t, p)
	res, err := Recover(img.f, img.fsys)
	return img, res, err
}

// tempCopy copies an image into the test's temp dir.
func tempCopy(t testing.TB, src, name string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), name)
	if err := testimg.CopyFile(src, dst); err != nil {
		t.Fatal(err)
	}
	return dst
}

// logdump is what debugfs logdump says about a journal: where the log
// starts and each block it found, in order.
type logdumpEntry struct {
	seq   uint32
	kind  int // 1 descriptor, 2 commit, 5 revoke
	block uint64
}

func debugfsLogdump(t testing.TB, img string) (start uint64, entries []logdumpEntry) {
	t.Helper()
	out := debugfs(t, img, "logdump")
	for _, line := range strings.Split(out, "\n") {
		var seq, kind uint32
		var blk uint64
		if n, _ := fmt.Sscanf(line, "Journal starts at block %d", &blk); n == 1 {
			start = blk
			continue
		}
		if i := strings.Index(line, "Found expected sequence "); i >= 0 {
			var rest string
			n, _ := fmt.Sscanf(line[i:], "Found expected sequence %d, type %d %s", &seq, &kind, &rest)
			j := strings.LastIndex(line, " at block ")
			if n >= 2 && j >= 0 {
				blk, _ = strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(line[j+len(" at block "):]), ":"), 10, 64)
				entries = append(entries, logdumpEntry{seq, int(kind), blk})
			}
		}
	}
	return start, entries
}
