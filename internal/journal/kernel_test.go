package journal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"safefs/internal/ext4"
	"safefs/internal/testimg"
)

// worker runs file operations under a mount point, keeping the first error.
type worker struct {
	mnt string
	err error
}

func (w *worker) p(name string) string { return filepath.Join(w.mnt, name) }

func (w *worker) do(err error) {
	if w.err == nil && err != nil {
		w.err = err
	}
}

func (w *worker) write(name string, data []byte) { w.do(os.WriteFile(w.p(name), data, 0o644)) }

// commit fsyncs a file: the running transaction commits and stays in the
// log, its metadata not written back.
func (w *worker) commit(name string) {
	f, err := os.OpenFile(w.p(name), os.O_RDWR, 0)
	if err != nil {
		w.do(err)
		return
	}
	w.do(f.Sync())
	f.Close()
}

// magicData is n bytes whose every 1 KiB block starts with the jbd2 magic
// number, so that journaling it (data=journal) escapes every block.
func magicData(seed uint64, n int) []byte {
	b := testimg.LayoutData(seed, n)
	for i := 0; i+4 <= n; i += 1024 {
		copy(b[i:], []byte{0xC0, 0x3B, 0x39, 0x98})
	}
	return b
}

// churn is the workload of the dirty images: creates, deletes, renames,
// truncates, xattr changes, links, and metadata blocks freed and then
// reused for file data (which needs revoke records to replay correctly),
// across several committed transactions, ending with work that only the
// shutdown's commit puts in the log.
func churn(big int) func(mnt string) error {
	return func(mnt string) error {
		w := &worker{mnt: mnt}
		for _, d := range []string{"a", "b", "c", "d"} {
			w.do(os.Mkdir(w.p(d), 0o755))
		}
		for i := 0; i < 120; i++ {
			w.write(fmt.Sprintf("a/f%03d", i), testimg.LayoutData(uint64(i), 50+i*97))
		}
		w.write("big", testimg.LayoutData(1000, big))
		w.do(os.Symlink("a/f001", w.p("link")))
		w.do(os.Link(w.p("a/f002"), w.p("c/hard")))
		w.commit("big")

		// Deletes, renames, attributes, a truncate.
		for i := 0; i < 40; i++ {
			w.do(os.Remove(w.p(fmt.Sprintf("a/f%03d", i))))
		}
		for i := 40; i < 70; i++ {
			w.do(os.Rename(w.p(fmt.Sprintf("a/f%03d", i)), w.p(fmt.Sprintf("b/g%03d", i))))
			w.do(syscall.Setxattr(w.p(fmt.Sprintf("b/g%03d", i)), "user.k", []byte(fmt.Sprint(i)), 0))
		}
		w.do(os.Chmod(w.p("b/g041"), 0o600))
		w.do(os.Chown(w.p("b/g042"), 1234, 5678))
		w.do(os.Truncate(w.p("big"), int64(big/3)))
		w.commit("big")

		// Metadata blocks freed then reused as file data: a directory of
		// many blocks and a file with an extent tree (or indirect
		// blocks), committed, deleted, and their blocks handed to a new
		// file.
		for i := 0; i < 400; i++ {
			w.write(fmt.Sprintf("d/entry-with-a-long-name-%04d", i), nil)
		}
		if f, err := os.Create(w.p("sparse")); err == nil {
			for i := int64(0); i < 300; i++ {
				_, err := f.WriteAt([]byte{byte(i)}, i*8192)
				w.do(err)
			}
			f.Close()
		} else {
			w.do(err)
		}
		w.commit("sparse")
		w.do(os.RemoveAll(w.p("d")))
		w.do(os.Remove(w.p("sparse")))
		w.commit("big")
		// Fill the filesystem, so that the allocator must hand out the
		// blocks just freed: their old contents are still in the log,
		// and only the revoke records keep the replay from writing them
		// over this file's data.
		var st syscall.Statfs_t
		w.do(syscall.Statfs(mnt, &st))
		fill := int64(st.Bavail)*st.Bsize - 256<<10
		w.write("reuse", testimg.LayoutData(2000, int(max(fill, 512<<10))))
		w.commit("reuse")

		// Blocks that start with the jbd2 magic number.
		w.write("c/magic", magicData(3000, 64<<10))
		w.commit("c/magic")

		// Left to the shutdown's commit.
		w.do(os.Mkdir(w.p("e"), 0o700))
		for i := 0; i < 30; i++ {
			w.write(fmt.Sprintf("e/n%02d", i), testimg.LayoutData(uint64(4000+i), 3000))
		}
		w.do(os.Rename(w.p("b/g050"), w.p("e/moved")))
		w.do(syscall.Removexattr(w.p("b/g051"), "user.k"))
		w.do(os.Remove(w.p("c/hard")))
		w.do(os.Truncate(w.p("big"), 5000))
		return w.err
	}
}

// dirtySpecs are the kernel-made dirty images: checksum v3 journals on
// 64bit ext4 with 4 KiB and 1 KiB blocks (the latter in data=journal mode,
// so that file data, escaped blocks and data revokes go through a log that
// wraps around), ext3-style journals without checksums and with 32-bit
// block numbers, checksum v1 and v3 with async commit, and fast_commit with
// nothing to replay in its fast-commit area.
func dirtySpecs() []struct {
	name string
	spec testimg.DirtySpec
} {
	return []struct {
		name string
		spec testimg.DirtySpec
	}{
		{"ext4-4k-csum3", testimg.DirtySpec{
			Mkfs: []string{"-t", "ext4", "-b", "4096", "-O", "64bit,metadata_csum"}, SizeMB: 64,
			Work: churn(3 << 20)}},
		{"ext4-1k-csum3-datajournal", testimg.DirtySpec{
			Mkfs: []string{"-t", "ext4", "-b", "1024", "-O", "64bit,metadata_csum", "-J", "size=1"}, SizeMB: 32,
			MountOpts: "data=journal", Work: churn(2 << 20)}},
		{"ext3-1k", testimg.DirtySpec{
			Mkfs: []string{"-t", "ext3", "-b", "1024"}, SizeMB: 32,
			Work: churn(1 << 20)}},
		{"ext3-4k-csum1-async", testimg.DirtySpec{
			Mkfs: []string{"-t", "ext3", "-b", "4096"}, SizeMB: 64,
			MountOpts: "data=writeback,journal_async_commit", Work: churn(2 << 20)}},
		{"ext4-4k-csum3-async", testimg.DirtySpec{
			Mkfs: []string{"-t", "ext4", "-b", "4096", "-O", "64bit,metadata_csum"}, SizeMB: 64,
			MountOpts: "data=writeback,journal_async_commit", Work: churn(2 << 20)}},
		{"ext4-4k-fastcommit-flushed", testimg.DirtySpec{
			Mkfs: []string{"-t", "ext4", "-b", "4096", "-O", "64bit,metadata_csum,fast_commit"}, SizeMB: 64,
			Work: churn(1 << 20)}},
	}
}

// fastCommitPending runs churn, then changes a file and fsyncs it, which
// ext4 records as a fast commit (no full commit follows: the shutdown does
// not flush the log).
func fastCommitPending(mnt string) error {
	if err := churn(1 << 20)(mnt); err != nil {
		return err
	}
	w := &worker{mnt: mnt}
	w.commit("big") // a full commit of churn's last changes
	w.write("fc-file", testimg.LayoutData(5000, 10000))
	w.commit("fc-file")
	if f, err := os.OpenFile(w.p("reuse"), os.O_WRONLY|os.O_APPEND, 0); err == nil {
		f.Write(testimg.LayoutData(5001, 5000))
		w.do(f.Sync())
		f.Close()
	}
	return w.err
}

// dirtyImages builds the dirty images once per test binary.
var dirtyImages = struct {
	once sync.Once
	dir  string
	imgs map[string]string
}{}

func dirtyImage(t *testing.T, name string) string {
	t.Helper()
	testimg.RequireKernelMount(t)
	dirtyImages.once.Do(func() {
		dir, err := os.MkdirTemp("", "journal-dirty-")
		if err != nil {
			t.Fatal(err)
		}
		dirtyImages.dir = dir
		dirtyImages.imgs = map[string]string{}
		for _, d := range dirtySpecs() {
			dirtyImages.imgs[d.name] = testimg.MakeDirty(t, dir, d.name, d.spec)
		}
		dirtyImages.imgs["ext4-4k-fastcommit-pending"] = testimg.MakeDirty(t, dir, "ext4-4k-fastcommit-pending", testimg.DirtySpec{
			Mkfs: []string{"-t", "ext4", "-b", "4096", "-O", "64bit,metadata_csum,fast_commit"}, SizeMB: 64,
			Work: fastCommitPending, Shutdown: testimg.ShutdownNoLogFlush})
	})
	p, ok := dirtyImages.imgs[name]
	if !ok {
		t.Fatalf("no dirty image %s (building them failed earlier)", name)
	}
	return p
}

func init() {
	cleanups = append(cleanups, func() {
		if dirtyImages.dir != "" {
			os.RemoveAll(dirtyImages.dir)
		}
	})
}

// TestKernelReplay compares Recover with the kernel's own replay on images
// the kernel left dirty: block by block over the whole filesystem (outside
// the journal, and the superblock fields the kernel rewrites), then a full
// walk of the overlay through internal/ext4 against the kernel's read-only
// mount of its replayed copy. The dirty image must be unchanged.
func TestKernelReplay(t *testing.T) {
	testimg.RequireKernelMount(t)
	for _, d := range dirtySpecs() {
		t.Run(d.name, func(t *testing.T) {
			dirty := dirtyImage(t, d.name)
			h := tool(t, "dumpe2fs", "-h", dirty)
			if !strings.Contains(h, "needs_recovery") {
				t.Fatalf("the kernel left no needs_recovery on %s:\n%s", dirty, h)
			}
			sum := fileSHA(t, dirty)
			img, res, err := recoverImage(t, dirty)
			if err != nil {
				t.Fatalf("Recover: %v", err)
			}
			start, log := debugfsLogdump(t, dirty)
			wrapped := len(log) > 0 && log[len(log)-1].block < start
			t.Logf("journal features compat 0x%x incompat 0x%x; transactions %d..%d (%d); %d blocks replayed (%d writes, %d revoke records, %d revoked writes, %d escaped writes); log wrapped: %v",
				res.Journal.Compat, res.Journal.Incompat, res.FirstTID, res.EndTID, res.Transactions(), len(res.Blocks),
				res.Replays, res.Revokes, res.RevokeHits, res.Escaped, wrapped)
			if res.Transactions() < 3 || len(res.Blocks) == 0 {
				t.Errorf("the workload left only %d transactions (%d blocks) to replay", res.Transactions(), len(res.Blocks))
			}

			oracle := tempCopy(t, dirty, "kernel.img")
			if err := testimg.KernelReplay(t, oracle); err != nil {
				t.Fatalf("the kernel refused to replay %s: %v", d.name, err)
			}
			skip := debugfsJournalBlocks(t, dirty)
			sb := img.fsys.Superblock()
			n := compareDevice(t, res.Overlay(img.f), oracle, img.fsys.BlockSize(), sb.BlocksCount, skip)
			t.Logf("%d blocks equal to the kernel's replay", n)

			ov, err := ext4.Open(res.Overlay(img.f), &ext4.Options{NoRecovery: true, DeviceSize: img.size})
			if err != nil {
				t.Fatalf("ext4 on the overlay: %v", err)
			}
			got := walkFS(t, ov)
			want := testimg.KernelWalk(t, oracle)
			testimg.Compare(t, want, got, testimg.CompareOpts{IgnoreSegments: true})
			t.Logf("%d paths equal to the kernel's walk", len(want))

			if after := fileSHA(t, dirty); after != sum {
				t.Errorf("the dirty image changed: sha256 %s, was %s", after, sum)
			}
		})
	}
}

// TestKernelFastCommit checks that a journal with fast commits to replay
// is refused: the kernel replays them (through ext4_fc_replay) on top of
// the journal, which Recover does not implement.
func TestKernelFastCommit(t *testing.T) {
	dirty := dirtyImage(t, "ext4-4k-fastcommit-pending")
	_, res, err := recoverImage(t, dirty)
	fe, ok := errAs[*FeatureError](err)
	if !ok || fe.Feature != "fast_commit" || res != nil {
		t.Fatalf("Recover: %v, want a fast_commit *FeatureError and no result", err)
	}
	t.Logf("Recover: %v", err)
	oracle := tempCopy(t, dirty, "kernel.img")
	if err := testimg.KernelMountReadWrite(t, oracle); err != nil {
		t.Fatalf("the kernel refused the fast commits: %v", err)
	}
	// The kernel's view has the fast-committed file.
	walk := testimg.KernelWalk(t, oracle)
	if _, ok := walk["fc-file"]; !ok {
		t.Errorf("the kernel's replay lacks fc-file; the image did not exercise fast commits")
	}
}

// TestKernelDirtyCoverage checks that the dirty images exercise what they
// are meant to, as debugfs (not this package) reads them: the journal
// features, and in the data=journal image a log that wraps around.
func TestKernelDirtyCoverage(t *testing.T) {
	testimg.RequireKernelMount(t)
	want := map[string][]string{
		"ext4-4k-csum3":              {"journal_64bit", "journal_checksum_v3"},
		"ext4-1k-csum3-datajournal":  {"journal_64bit", "journal_checksum_v3"},
		"ext3-1k":                    {"journal_incompat_revoke"},
		"ext3-4k-csum1-async":        {"journal_checksum", "journal_async_commit"},
		"ext4-4k-csum3-async":        {"journal_checksum_v3", "journal_async_commit"},
		"ext4-4k-fastcommit-flushed": {"journal_checksum_v3"},
	}
	for name, feats := range want {
		dirty := dirtyImage(t, name)
		jf := journalFeatures(t, dirty)
		for _, f := range feats {
			if !strings.Contains(" "+jf+" ", " "+f+" ") {
				t.Errorf("%s: journal feature %s missing (dumpe2fs: %s)", name, f, jf)
			}
		}
		if strings.HasPrefix(name, "ext3") && strings.Contains(jf, "journal_64bit") {
			t.Errorf("%s: wanted 32-bit journal block numbers", name)
		}
	}
	dirty := dirtyImage(t, "ext4-1k-csum3-datajournal")
	start, log := debugfsLogdump(t, dirty)
	if len(log) == 0 || log[len(log)-1].block >= start {
		t.Errorf("the data=journal log does not wrap around (starts at %d, %d blocks found)", start, len(log))
	}
}

// errAs is errors.As for a target type, for brevity in tests.
func errAs[T error](err error) (T, bool) {
	var e T
	ok := errors.As(err, &e)
	return e, ok
}
