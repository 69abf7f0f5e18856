package journal

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"safefs/internal/testimg"
)

// debugfsJournal describes a journal written by debugfs (jo, jw, jc) on a
// fresh filesystem.
type debugfsJournal struct {
	name   string
	mkfs   []string
	sizeMB int
	open   string // journal_open options: checksum version
	// seq, when non-zero, is written to the fresh journal's s_sequence
	// first, so that transaction IDs wrap past 2^32.
	seq uint32
	// noRevoke leaves out the revoke-only transaction: debugfs 1.47.0
	// checksums it (checksum v1) differently from the kernel's jbd2, which
	// then calls it corrupt. The variants with it check exactly that.
	noRevoke bool
}

var debugfsJournals = []debugfsJournal{
	{"ext4-1k-nocsum", []string{"-t", "ext4", "-b", "1024", "-O", "64bit,metadata_csum"}, 16, "", 0, false},
	{"ext4-1k-csum2", []string{"-t", "ext4", "-b", "1024", "-O", "64bit,metadata_csum"}, 16, "-c -v 2", 0, false},
	{"ext4-1k-csum3", []string{"-t", "ext4", "-b", "1024", "-O", "64bit,metadata_csum"}, 16, "-c -v 3", 0, false},
	{"ext4-1k-csum3-tidwrap", []string{"-t", "ext4", "-b", "1024", "-O", "64bit,metadata_csum"}, 16, "-c -v 3", 0xFFFFFFFD, false},
	{"ext4-4k-csum3", []string{"-t", "ext4", "-b", "4096", "-O", "64bit,metadata_csum"}, 64, "-c -v 3", 0, false},
	{"ext4-4k-csum2-32bit", []string{"-t", "ext4", "-b", "4096", "-O", "^64bit,metadata_csum"}, 64, "-c -v 2", 0, false},
	{"ext4-4k-csum3-32bit", []string{"-t", "ext4", "-b", "4096", "-O", "^64bit,metadata_csum"}, 64, "-c -v 3", 0, false},
	{"ext3-1k-nocsum", []string{"-t", "ext3", "-b", "1024"}, 16, "", 0, false},
	{"ext3-1k-csum1", []string{"-t", "ext3", "-b", "1024"}, 16, "-c", 0, true},
	{"ext3-4k-csum1-tidwrap", []string{"-t", "ext3", "-b", "4096"}, 64, "-c", 0xFFFFFFFE, true},
	{"ext3-1k-csum1-revoke", []string{"-t", "ext3", "-b", "1024"}, 16, "-c", 0, false},
}

// writeDebugfsJournal makes the image of d and writes transactions into
// its journal with debugfs: blocks written, rewritten, revoked and written
// again after the revoke, a transaction spanning several descriptor
// blocks, a block that starts with the jbd2 magic number (escaped in the
// log), and a last transaction without a commit block.
func writeDebugfsJournal(t *testing.T, d debugfsJournal) string {
	t.Helper()
	dir := t.TempDir()
	conf := filepath.Join(dir, "mke2fs.conf")
	if err := os.WriteFile(conf, []byte(testimg.MkfsConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, d.name+".img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(int64(d.sizeMB) << 20)
	f.Close()
	if _, err := testimg.FindTool("debugfs"); err != nil {
		t.Skipf("debugfs: %v", err)
	}
	if err := testimg.RunE2fsprogs(dir, conf, "mke2fs", append(append([]string{"-q", "-F"}, d.mkfs...), img)...); err != nil {
		t.Fatal(err)
	}
	bs := int(openImage(t, img).fsys.BlockSize())
	if d.seq != 0 {
		phys := strings.TrimSpace(debugfs(t, img, "bmap <8> 0"))
		n, err := strconv.ParseInt(phys, 10, 64)
		if err != nil {
			t.Fatalf("bmap: %q", phys)
		}
		f, err := os.OpenFile(img, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], d.seq)
		_, err = f.WriteAt(b[:], n*int64(bs)+0x18)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	// Free blocks in the upper part of the filesystem.
	blocks := uint64(d.sizeMB<<20) / uint64(bs)
	b0 := blocks * 5 / 8
	data := func(name string, seed uint64, n int, magic bool) string {
		p := filepath.Join(dir, name)
		b := testimg.LayoutData(seed, n*bs)
		if magic {
			for i := 0; i < len(b); i += bs {
				copy(b[i:], []byte{0xC0, 0x3B, 0x39, 0x98})
			}
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	list := func(bs ...uint64) string {
		var s []string
		for _, b := range bs {
			s = append(s, strconv.FormatUint(b, 10))
		}
		return strings.Join(s, ",")
	}
	revoke := fmt.Sprintf("jw -r %s", list(b0+1, b0+2))
	if d.noRevoke {
		revoke = fmt.Sprintf("jw -b %s %s", list(b0+1), data("r", 7, 1, false))
	}
	cmds := []string{
		"jo " + d.open,
		fmt.Sprintf("jw -b %s %s", list(b0, b0+1, b0+2, b0+3), data("a", 1, 4, false)),
		revoke,
		fmt.Sprintf("jw -b %s %s", list(b0+2, b0+5), data("b", 2, 2, false)),
		fmt.Sprintf("jw -b %s %s", list(b0+6, b0+7), data("m", 3, 2, true)),
		fmt.Sprintf("jw -b %d-%d %s", b0+100, b0+299, data("long", 4, 200, false)),
		fmt.Sprintf("jw -b %s %s", list(b0, b0+150), data("c", 5, 2, false)),
		fmt.Sprintf("jw -b %s -c %s", list(b0+8, b0+3), data("d", 6, 2, false)),
		"jc",
	}
	script := filepath.Join(dir, "cmds")
	if err := os.WriteFile(script, []byte(strings.Join(cmds, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := tool(t, "debugfs", "-w", "-f", script, img)
	for _, l := range strings.Split(out, "\n") {
		if l != "" && !strings.HasPrefix(l, "debugfs") && !strings.HasPrefix(l, "Setting csum") {
			t.Fatalf("debugfs journal writing: %s\n%s", l, out)
		}
	}
	return img
}

// TestDebugfsJournals compares Recover with e2fsprogs' replay (debugfs
// journal_run) of journals debugfs wrote: checksum none, v1, v2 and v3, 1
// and 4 KiB blocks, 32- and 64-bit block numbers, transaction IDs that wrap
// past 2^32. The overlay must equal the replayed copy block by block,
// outside the journal and the superblock fields e2fsprogs rewrites.
func TestDebugfsJournals(t *testing.T) {
	for _, d := range debugfsJournals {
		t.Run(d.name, func(t *testing.T) {
			img := writeDebugfsJournal(t, d)
			jf := journalFeatures(t, img)
			sum := fileSHA(t, img)
			im, res, err := recoverImage(t, img)
			v1Revoke := strings.Contains(jf, "journal_checksum ") || strings.HasSuffix(jf, "journal_checksum")
			v1Revoke = v1Revoke && !d.noRevoke
			if v1Revoke {
				// The kernel calls the revoke-only transaction corrupt,
				// replays the one before and refuses the mount;
				// debugfs replays the same and carries on.
				if ce, ok := errAs[*CorruptError](err); !ok || ce.Kind != BadCommit || res == nil || res.Transactions() != 1 {
					t.Fatalf("Recover: %v, want a BadCommit error after 1 transaction", err)
				}
			} else if err != nil {
				t.Fatalf("Recover: %v", err)
			}
			t.Logf("journal features: %s; transactions %d..%d; %d blocks (%d writes, %d revoke records, %d revoked writes, %d escaped)",
				jf, res.FirstTID, res.EndTID, len(res.Blocks), res.Replays, res.Revokes, res.RevokeHits, res.Escaped)
			wantHits := 2
			if d.noRevoke {
				wantHits = 0
			}
			if !v1Revoke && (res.Transactions() != 6 || res.RevokeHits != wantHits || res.Escaped != 2) {
				t.Errorf("want 6 transactions with %d revoked writes and 2 escaped blocks", wantHits)
			}
			oracle := tempCopy(t, img, "replayed.img")
			tool(t, "debugfs", "-w", "-R", "jr", oracle)
			skip := debugfsJournalBlocks(t, img)
			n := compareDevice(t, res.Overlay(im.f), oracle, im.fsys.BlockSize(), im.fsys.Superblock().BlocksCount, skip, e2fsprogsIgnore...)
			t.Logf("%d blocks equal to debugfs's replay", n)
			if os.Geteuid() == 0 {
				// The kernel, when it can be asked, is the authority.
				checkAgainstKernel(t, img)
			}
			if fileSHA(t, img) != sum {
				t.Errorf("Recover changed the image")
			}
		})
	}
}
