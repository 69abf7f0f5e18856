package journal

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"safefs/internal/ext4"
	"safefs/internal/testimg"
)

// corpus holds the decompressed corpus, shared by the tests of one run.
var corpus struct {
	once sync.Once
	dir  string
	imgs map[string]string
	err  error
}

// corpusImages returns name -> path of every corpus image whose name has
// the prefix, decompressed once per test binary.
func corpusImages(t testing.TB, prefix string) map[string]string {
	t.Helper()
	src := testimg.CorpusDir()
	if src == "" {
		t.Skip("no e2fsprogs corpus (../shared/corpus/e2fsprogs or $" + testimg.CorpusEnv + ")")
	}
	corpus.once.Do(func() {
		corpus.imgs, corpus.dir, corpus.err = decompressCorpus(src)
		cleanups = append(cleanups, func() { os.RemoveAll(corpus.dir) })
	})
	if corpus.err != nil {
		t.Fatal(corpus.err)
	}
	out := map[string]string{}
	for n, p := range corpus.imgs {
		if strings.HasPrefix(n, prefix) {
			out[n] = p
		}
	}
	return out
}

func decompressCorpus(src string) (map[string]string, string, error) {
	dir, err := os.MkdirTemp("", "journal-corpus-")
	if err != nil {
		return nil, "", err
	}
	out := map[string]string{}
	for _, c := range testimg.CorpusImages(src) {
		p := filepath.Join(dir, c.Name+".img")
		if err := c.WriteFile(p, 512<<20); err != nil {
			return nil, dir, fmt.Errorf("%s: %v", c.Name, err)
		}
		out[c.Name] = p
	}
	return out, dir, nil
}

// recoverBounded runs Recover with a time limit, turning a panic into a
// test failure with the image's name.
func recoverBounded(t *testing.T, name, p string) (*Result, error, bool) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	fsys, err := ext4.Open(f, &ext4.Options{NoRecovery: true, DeviceSize: st.Size()})
	if err != nil {
		return nil, err, false
	}
	type out struct {
		res *Result
		err error
		pan any
	}
	done := make(chan out, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- out{pan: p}
			}
		}()
		res, err := Recover(f, fsys)
		if res != nil {
			// Read every replayed block through the overlay, too.
			ov := res.Overlay(f)
			buf := make([]byte, res.BlockSize)
			for _, b := range res.Blocks {
				ov.ReadAt(buf, int64(b.Target)*int64(res.BlockSize))
			}
		}
		done <- out{res: res, err: err}
	}()
	select {
	case o := <-done:
		if o.pan != nil {
			t.Fatalf("%s: Recover panicked: %v", name, o.pan)
		}
		return o.res, o.err, true
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: Recover did not return within 20 s", name)
	}
	return nil, nil, false
}

// TestCorpusRobust runs Recover over every image of the e2fsprogs corpus:
// it must return, without panicking, within a time limit, whatever the
// image. It prints what each image gave.
func TestCorpusRobust(t *testing.T) {
	imgs := corpusImages(t, "")
	names := make([]string, 0, len(imgs))
	for n := range imgs {
		names = append(names, n)
	}
	sort.Strings(names)
	var summary bytes.Buffer
	for _, n := range names {
		res, err, opened := recoverBounded(t, n, imgs[n])
		switch {
		case !opened:
			fmt.Fprintf(&summary, "%-40s ext4 refuses: %v\n", n, err)
		case res != nil && len(res.Blocks) > 0:
			fmt.Fprintf(&summary, "%-40s %d transactions, %d blocks; err %v\n", n, res.Transactions(), len(res.Blocks), err)
		case err != nil:
			fmt.Fprintf(&summary, "%-40s %v\n", n, err)
		}
	}
	t.Logf("images that needed recovery or failed:\n%s", summary.String())
}

// corpusExpect is what Recover must say about each journal test image of
// the corpus: the kind of error (0 for none), whether a Result comes with
// it, and how many blocks it replays. The kernel agrees (see
// TestCorpusKernel) except on fast commits, which it replays.
var corpusExpect = map[string]struct {
	kind    Corruption
	feature bool // a *FeatureError
	result  bool
	blocks  int
}{
	"j_corrupt_commit_tid":    {0, false, true, 0},              // the bad-tid commit ends the log first
	"j_corrupt_descr_csum":    {BadDescriptor, false, false, 0}, // not stale: recovery fails
	"j_corrupt_journal_block": {BadDataBlock, false, true, 3},   // the rest replayed, mount refused
	"j_corrupt_revoke_block":  {BadRevoke, false, false, 0},     // r_count overruns the block
	"j_corrupt_revoke_rcount": {BadRevoke, false, false, 0},
	"j_recover_csum2_64bit":   {0, false, true, 6},
	"j_recover_fast_commit":   {0, true, false, 0},
}

// TestCorpusJournals checks the corpus's journal images against the
// expectations above and, where e2fsprogs's replay (debugfs journal_run)
// agrees with the kernel, against that replay block by block.
func TestCorpusJournals(t *testing.T) {
	imgs := corpusImages(t, "j_")
	for name, p := range imgs {
		t.Run(name, func(t *testing.T) {
			want, ok := corpusExpect[name]
			if !ok {
				t.Skip("no expectation recorded for this image")
			}
			res, err, opened := recoverBounded(t, name, p)
			if !opened {
				t.Fatalf("ext4 refuses the image: %v", err)
			}
			switch ce, isCorrupt := errAs[*CorruptError](err); {
			case want.feature:
				if _, ok := errAs[*FeatureError](err); !ok {
					t.Fatalf("Recover: %v, want a *FeatureError", err)
				}
			case want.kind == 0 && err != nil:
				t.Fatalf("Recover: %v", err)
			case want.kind != 0 && (!isCorrupt || ce.Kind != want.kind):
				t.Fatalf("Recover: %v, want a %v error", err, want.kind)
			}
			if (res != nil) != want.result || res != nil && len(res.Blocks) != want.blocks {
				t.Fatalf("Result %v with %d blocks, want result %v with %d", res != nil, blocksOf(res), want.result, want.blocks)
			}
			if res == nil {
				return
			}
			t.Logf("transactions %d..%d, %d blocks; err %v", res.FirstTID, res.EndTID, len(res.Blocks), err)
			oracle := tempCopy(t, p, "debugfs-replayed.img")
			tool(t, "debugfs", "-w", "-R", "jr", oracle)
			im := openImage(t, p)
			skip := debugfsJournalBlocks(t, p)
			n := compareDevice(t, res.Overlay(im.f), oracle, im.fsys.BlockSize(), im.fsys.Superblock().BlocksCount, skip, e2fsprogsIgnore...)
			t.Logf("%d blocks equal to debugfs's replay", n)
		})
	}
}

func blocksOf(r *Result) int {
	if r == nil {
		return 0
	}
	return len(r.Blocks)
}

// TestCorpusKernel lets the kernel replay each image of the corpus that
// needs recovery and checks Recover against it (root only): for the journal
// test images the same refusals, for all the same device afterwards (the
// other images may have damage outside the journal that makes the kernel
// refuse the mount after its replay). Fast commits are the exception: the
// kernel replays them, Recover refuses.
func TestCorpusKernel(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the kernel oracle needs root")
	}
	imgs := corpusImages(t, "")
	for name, p := range imgs {
		t.Run(name, func(t *testing.T) {
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			fsys, err := ext4.Open(f, &ext4.Options{NoRecovery: true})
			f.Close()
			if err != nil || !fsys.Superblock().NeedsRecovery() {
				t.Skip("does not need recovery (or ext4 refuses it)")
			}
			if !strings.HasPrefix(name, "j_") {
				// After its replay the kernel also processes the orphan
				// list or orphan file, which these images exercise;
				// TestCorpusE2fsprogs compares them with e2fsprogs's
				// replay alone.
				t.Skip("not a journal test image")
			}
			if corpusExpect[name].feature {
				_, err := recoverImageErr(t, p)
				if _, ok := errAs[*FeatureError](err); !ok {
					t.Fatalf("Recover: %v, want a *FeatureError", err)
				}
				return
			}
			checkAgainstKernel(t, p)
		})
	}
}

// TestCorpusE2fsprogs compares Recover with e2fsprogs's replay (debugfs
// journal_run) on the corpus images outside the journal tests that need
// recovery and that Recover replays without error.
func TestCorpusE2fsprogs(t *testing.T) {
	imgs := corpusImages(t, "")
	for name, p := range imgs {
		if strings.HasPrefix(name, "j_") {
			continue
		}
		t.Run(name, func(t *testing.T) {
			res, err, opened := recoverBounded(t, name, p)
			if !opened || err != nil || res == nil || len(res.Blocks) == 0 {
				t.Skip("nothing replayed")
			}
			oracle := tempCopy(t, p, "debugfs-replayed.img")
			tool(t, "debugfs", "-w", "-R", "jr", oracle)
			im := openImage(t, p)
			skip := debugfsJournalBlocks(t, p)
			n := compareDevice(t, res.Overlay(im.f), oracle, im.fsys.BlockSize(), im.fsys.Superblock().BlocksCount, skip, e2fsprogsIgnore...)
			t.Logf("%d transactions, %d blocks; %d blocks equal to debugfs's replay", res.Transactions(), len(res.Blocks), n)
		})
	}
}

func recoverImageErr(t *testing.T, p string) (*Result, error) {
	_, res, err := recoverImage(t, p)
	return res, err
}
