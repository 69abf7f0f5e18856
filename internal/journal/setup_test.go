package journal

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"safefs/internal/testimg"
)

// patchJournalSuperblock overwrites bytes of the journal superblock of img
// (found with debugfs bmap).
func patchJournalSuperblock(t *testing.T, img string, off int, b []byte) {
	t.Helper()
	out := strings.TrimSpace(debugfs(t, img, "bmap <8> 0"))
	phys, err := strconv.ParseInt(out, 10, 64)
	if err != nil {
		t.Fatalf("bmap: %q", out)
	}
	bs := int64(openImage(t, img).fsys.BlockSize())
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, phys*bs+int64(off)); err != nil {
		t.Fatal(err)
	}
}

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// TestJournalSetup checks how Recover treats the ext4 fields that lead to
// the journal and the journal's own superblock, on journals debugfs wrote
// and then damaged: what the kernel refuses (a journal inode that is a
// directory, deleted, too small or failing its checksum; a journal
// superblock with a bad magic, checksum, start or unknown feature; an
// external journal) Recover refuses with the matching error and no Result;
// a needs_recovery flag over an empty journal replays nothing. With root,
// the kernel is asked too: same refusals, and the device it leaves.
func TestJournalSetup(t *testing.T) {
	type kase struct {
		name    string
		base    debugfsJournal
		damage  func(t *testing.T, img string)
		check   func(err error) bool
		want    string
		noBlock bool // nothing to replay (and, without check, no error)
	}
	csum3 := debugfsJournals[2] // ext4-1k-csum3
	plain := debugfsJournals[0] // ext4-1k-nocsum
	sif := func(field, val string) func(t *testing.T, img string) {
		return func(t *testing.T, img string) {
			tool(t, "debugfs", "-w", "-R", fmt.Sprintf("sif <8> %s %s", field, val), img)
		}
	}
	corrupt := func(k Corruption) func(error) bool {
		return func(err error) bool { ce, ok := errAs[*CorruptError](err); return ok && ce.Kind == k }
	}
	feature := func(err error) bool { _, ok := errAs[*FeatureError](err); return ok }
	cases := []kase{
		{"inode-is-directory", csum3, sif("mode", "040755"), corrupt(BadJournalInode), "BadJournalInode", false},
		{"inode-deleted", csum3, sif("links_count", "0"), corrupt(BadJournalInode), "BadJournalInode", false},
		{"inode-too-small", csum3, sif("size", "4096"), corrupt(BadJournalSuperblock), "BadJournalSuperblock", false},
		{"inode-bad-checksum", csum3, func(t *testing.T, img string) {
			// Change i_generation behind debugfs's back: the inode
			// checksum, seeded with it, no longer matches.
			out := debugfs(t, img, "imap <8>")
			var blk, off int64
			if _, err := fmt.Sscanf(out[strings.Index(out, "located at block"):], "located at block %d, offset 0x%x", &blk, &off); err != nil {
				t.Fatalf("imap: %q: %v", out, err)
			}
			f, _ := os.OpenFile(img, os.O_RDWR, 0)
			defer f.Close()
			f.WriteAt([]byte{0x5a}, blk*1024+off+0x64)
		}, corrupt(BadJournalInode), "BadJournalInode", false},
		{"sb-bad-magic", csum3, func(t *testing.T, img string) { patchJournalSuperblock(t, img, 0, be32(0xC03B3999)) },
			corrupt(BadJournalSuperblock), "BadJournalSuperblock", false},
		{"sb-bad-checksum", csum3, func(t *testing.T, img string) { patchJournalSuperblock(t, img, 0xFC, be32(0x12345678)) },
			corrupt(BadJournalSuperblock), "BadJournalSuperblock", false},
		{"sb-first-zero", plain, func(t *testing.T, img string) { patchJournalSuperblock(t, img, 0x14, be32(0)) },
			corrupt(BadJournalSuperblock), "BadJournalSuperblock", false},
		{"sb-start-beyond", plain, func(t *testing.T, img string) { patchJournalSuperblock(t, img, 0x1C, be32(5000)) },
			corrupt(BadLog), "BadLog", false},
		{"sb-unknown-incompat", plain, func(t *testing.T, img string) { patchJournalSuperblock(t, img, 0x28, be32(0x1|0x2|0x40)) },
			feature, "FeatureError", false},
		{"sb-version1", plain, func(t *testing.T, img string) { patchJournalSuperblock(t, img, 4, be32(blockSuperV1)) },
			// Version 1 ignores the feature words, so 64-bit tags read
			// as 32-bit ones and the log ends at once; then ext4
			// cannot give the journal the 64bit feature and refuses.
			corrupt(BadJournalSuperblock), "BadJournalSuperblock", true},
		{"sb-version1-ext3", debugfsJournals[7], func(t *testing.T, img string) { patchJournalSuperblock(t, img, 4, be32(blockSuperV1)) },
			// 32-bit tags without checksums are what version 1 reads:
			// the whole log replays, revoke blocks included.
			func(err error) bool { return err == nil }, "no error", false},
		{"external-journal", plain, func(t *testing.T, img string) {
			tool(t, "debugfs", "-w", "-R", "ssv journal_inum 0", img)
			tool(t, "debugfs", "-w", "-R", "ssv journal_dev 0x801", img)
		}, func(err error) bool { _, ok := errAs[*ExternalJournalError](err); return ok }, "ExternalJournalError", false},
		{"both-inode-and-device", plain, func(t *testing.T, img string) {
			tool(t, "debugfs", "-w", "-R", "ssv journal_dev 0x801", img)
		}, corrupt(BadJournalInode), "BadJournalInode", false},
		{"needs-recovery-empty-log", plain, func(t *testing.T, img string) {
			tool(t, "debugfs", "-w", "-R", "jr", img) // replays and empties the log
			tool(t, "debugfs", "-w", "-R", "feature needs_recovery", img)
		}, nil, "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			img := writeDebugfsJournal(t, c.base)
			c.damage(t, img)
			_, res, err := recoverImage(t, img)
			switch {
			case c.noBlock && c.check != nil:
				if !c.check(err) || res == nil || len(res.Blocks) != 0 {
					t.Fatalf("Recover: %v (result %v), want a %s and an empty result", err, res != nil, c.want)
				}
			case c.noBlock:
				if err != nil || res == nil || len(res.Blocks) != 0 {
					t.Fatalf("Recover: %v, %v; want an empty Result", res, err)
				}
			case c.check != nil && err == nil:
				if !c.check(err) || res == nil || res.Transactions() != 6 || res.RevokeHits != 2 {
					t.Fatalf("Recover: %v, want the whole log replayed", err)
				}
			case c.check != nil:
				if !c.check(err) || res != nil {
					t.Fatalf("Recover: %v (result %v), want a %s and no result", err, res != nil, c.want)
				}
			}
			t.Logf("Recover: %v", err)
			if os.Geteuid() != 0 {
				return
			}
			if c.name == "external-journal" {
				// Both refuse; there is no device for the kernel to
				// replay.
				return
			}
			checkAgainstKernel(t, img)
		})
	}
}

// TestEndlessLog fills a journal's log with revoke blocks that all carry
// the expected sequence number and no commit: jbd2's scan would go round
// the log forever (do not mount this with the kernel). Recover must give up
// with a BadLog error after its bound, quickly.
func TestEndlessLog(t *testing.T) {
	img := writeDebugfsJournal(t, debugfsJournals[0]) // ext4-1k-nocsum
	im := openImage(t, img)
	out := strings.TrimSpace(debugfs(t, img, "bmap <8> 0"))
	phys, err := strconv.ParseInt(out, 10, 64)
	if err != nil {
		t.Fatalf("bmap: %q", out)
	}
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	bs := int64(im.fsys.BlockSize())
	sb := make([]byte, bs)
	f.ReadAt(sb, phys*bs)
	seq := binary.BigEndian.Uint32(sb[0x18:])
	blk := make([]byte, bs)
	binary.BigEndian.PutUint32(blk[0:], jbd2Magic)
	binary.BigEndian.PutUint32(blk[4:], blockRevoke)
	binary.BigEndian.PutUint32(blk[8:], seq)
	binary.BigEndian.PutUint32(blk[12:], revokeHeaderSize)
	for i := int64(1); i < 1024; i++ { // the journal is one extent
		f.WriteAt(blk, (phys+i)*bs)
	}
	f.Close()
	start := time.Now()
	_, res, err := recoverImage(t, img)
	if ce, ok := errAs[*CorruptError](err); !ok || ce.Kind != BadLog || res != nil {
		t.Fatalf("Recover: %v, want a BadLog error", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Recover took %v", d)
	}
	t.Logf("Recover: %v", err)
}

// TestTagTargetsJournal has debugfs log a block that lies inside the
// journal: jbd2 would write it into its own log during the replay, which
// no journal jbd2 writes ever asks for; Recover refuses.
func TestTagTargetsJournal(t *testing.T) {
	img := writeDebugfsJournal(t, debugfsJournals[0])
	dir := t.TempDir()
	out := strings.TrimSpace(debugfs(t, img, "bmap <8> 900"))
	data := dir + "/data"
	os.WriteFile(data, make([]byte, 1024), 0o644)
	cmds := dir + "/cmds"
	os.WriteFile(cmds, []byte("jo\njw -b "+out+" "+data+"\njc\n"), 0o644)
	tool(t, "debugfs", "-w", "-f", cmds, img)
	_, _, err := recoverImage(t, img)
	if ce, ok := errAs[*CorruptError](err); !ok || ce.Kind != BadDescriptor {
		t.Fatalf("Recover: %v, want a BadDescriptor error", err)
	}
	t.Logf("Recover: %v", err)
}

// TestNeedsRecoveryWithoutJournal: needs_recovery on a filesystem without
// a journal; the kernel mounts it in no-journal mode and replays nothing,
// and so does Recover.
func TestNeedsRecoveryWithoutJournal(t *testing.T) {
	d := debugfsJournal{name: "ext2", mkfs: []string{"-t", "ext2", "-b", "1024"}, sizeMB: 8}
	dir := t.TempDir()
	conf := dir + "/mke2fs.conf"
	os.WriteFile(conf, []byte(testimg.MkfsConfig), 0o644)
	img := dir + "/ext2.img"
	f, _ := os.Create(img)
	f.Truncate(int64(d.sizeMB) << 20)
	f.Close()
	if err := testimg.RunE2fsprogs(dir, conf, "mke2fs", append(append([]string{"-q", "-F"}, d.mkfs...), img)...); err != nil {
		t.Skip(err)
	}
	tool(t, "debugfs", "-w", "-R", "feature needs_recovery", img)
	_, res, err := recoverImage(t, img)
	if err != nil || res == nil || len(res.Blocks) != 0 {
		t.Fatalf("Recover: %v, %v; want an empty result", res, err)
	}
	if os.Geteuid() == 0 {
		checkAgainstKernel(t, img)
	}
}
