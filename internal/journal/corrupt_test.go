package journal

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"safefs/internal/testimg"
)

// checkAgainstKernel runs Recover on img and lets the kernel replay a copy
// of it, then checks that they agree: Recover fails exactly when the kernel
// refuses the mount, and the overlay (or, when Recover returns no Result,
// the untouched image) equals the device the kernel leaves, block by block
// outside the journal. It returns Recover's result and error.
func checkAgainstKernel(t *testing.T, img string) (*Result, error) {
	t.Helper()
	return checkAgainstKernelOpt(t, img, true)
}

// checkAgainstKernelOpt is checkAgainstKernel; with sameOutcome false, the
// kernel may refuse the mount for reasons of its own (damage outside the
// journal), and only the devices are compared.
func checkAgainstKernelOpt(t *testing.T, img string, sameOutcome bool) (*Result, error) {
	t.Helper()
	sum := fileSHA(t, img)
	im, res, err := recoverImage(t, img)
	oracle := tempCopy(t, img, "kernel.img")
	kerr := testimg.KernelReplay(t, oracle)
	t.Logf("Recover: %v; kernel mount: %v", err, kerr)
	if sameOutcome && (err == nil) != (kerr == nil) {
		t.Errorf("Recover's error %v, but the kernel's mount: %v", err, kerr)
	}
	if res != nil {
		t.Logf("transactions %d..%d, %d blocks (%d writes, %d revoke records, %d revoked writes)",
			res.FirstTID, res.EndTID, len(res.Blocks), res.Replays, res.Revokes, res.RevokeHits)
	}
	skip := debugfsJournalBlocks(t, img)
	n := compareDevice(t, res.Overlay(im.f), oracle, im.fsys.BlockSize(), im.fsys.Superblock().BlocksCount, skip)
	t.Logf("%d blocks equal to the kernel's", n)
	if after := fileSHA(t, img); after != sum {
		t.Errorf("Recover changed the image")
	}
	return res, err
}

// flipByte corrupts one byte of journal block pos of img (located with
// debugfs bmap).
func flipByte(t *testing.T, img string, pos uint64, off int) {
	t.Helper()
	out := strings.TrimSpace(debugfs(t, img, fmt.Sprintf("bmap <8> %d", pos)))
	phys, err := strconv.ParseUint(out, 10, 64)
	if err != nil {
		t.Fatalf("debugfs bmap <8> %d: %q", pos, out)
	}
	bs := int64(openImage(t, img).fsys.BlockSize())
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	at := int64(phys)*bs + int64(off)
	if _, err := f.ReadAt(b, at); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xA5
	if _, err := f.WriteAt(b, at); err != nil {
		t.Fatal(err)
	}
}

// TestKernelCorruptLog damages one block in the middle of a kernel-written
// log and checks Recover against the kernel's replay of the damaged copy:
// a commit block failing its checksum (the kernel replays the transactions
// before it, then refuses the mount), a journaled block failing its tag
// checksum (everything else is replayed, then the mount is refused), a
// descriptor or revoke block failing its checksum (nothing is replayed),
// with checksum v1 and async_commit a bad commit crc32 (a failed commit
// once the next commit block is seen), and with checksum v3 and
// async_commit a bad commit checksum (the log just ends there).
func TestKernelCorruptLog(t *testing.T) {
	testimg.RequireKernelMount(t)
	type kase struct {
		name, image string
		kind        int // block type to damage
		nth         int // which of them, counted from the middle of the log
		offset      int // byte to flip; negative counts from the block's end
		dataBlock   bool
		want        Corruption
		wantResult  bool
	}
	cases := []kase{
		{"commit-csum3", "ext4-4k-csum3", blockCommit, 0, 16, false, BadCommit, true},
		{"data-csum3", "ext4-4k-csum3", blockDescriptor, 0, 100, true, BadDataBlock, true},
		{"descriptor-csum3", "ext4-4k-csum3", blockDescriptor, 0, -1, false, BadDescriptor, false},
		{"revoke-csum3", "ext4-4k-csum3", blockRevoke, 0, -1, false, BadRevoke, false},
		{"commit-csum1-async", "ext3-4k-csum1-async", blockCommit, 0, 16, false, BadCommit, true},
		{"commit-1k-csum3", "ext4-1k-csum3-datajournal", blockCommit, 1, 16, false, BadCommit, true},
		// Damage past the commit header: the kernel's partial check
		// (the header followed by zeros, as a commit block whose tail
		// was never written) accepts it at byte 200, not at byte 62,
		// which sizeof(struct commit_header) still covers.
		{"commit-tail-csum3", "ext4-4k-csum3", blockCommit, 0, 200, false, 0, true},
		{"commit-header-pad-csum3", "ext4-4k-csum3", blockCommit, 0, 62, false, BadCommit, true},
		// With async_commit and checksum v3, a bad commit block ends
		// the log quietly: the kernel mounts what came before.
		{"commit-csum3-async", "ext4-4k-csum3-async", blockCommit, 0, 16, false, 0, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			img := tempCopy(t, dirtyImage(t, c.image), "corrupt.img")
			_, log := debugfsLogdump(t, img)
			var blocks []logdumpEntry
			for _, e := range log {
				if e.kind == c.kind {
					blocks = append(blocks, e)
				}
			}
			if len(blocks) == 0 {
				t.Skipf("no block of type %d in the log", c.kind)
			}
			target := blocks[min(len(blocks)/2+c.nth, len(blocks)-1)]
			pos := target.block
			if c.dataBlock {
				pos++
			}
			off := c.offset
			if off < 0 {
				off += int(openImage(t, img).fsys.BlockSize())
			}
			t.Logf("damaging journal block %d (type %d, transaction %d) at byte %d", pos, c.kind, target.seq, off)
			flipByte(t, img, pos, off)
			res, err := checkAgainstKernel(t, img)
			if ce, ok := errAs[*CorruptError](err); c.want != 0 && (!ok || ce.Kind != c.want) {
				t.Fatalf("Recover: %v, want a %v CorruptError", err, c.want)
			} else if c.want == 0 && err != nil {
				t.Fatalf("Recover: %v, want no error", err)
			}
			if (res != nil) != c.wantResult {
				t.Errorf("Recover returned a Result: %v, want %v", res != nil, c.wantResult)
			}
			if c.kind == blockCommit && c.want != 0 && res != nil && res.EndTID != target.seq {
				t.Errorf("replayed up to transaction %d, want up to the damaged %d", res.EndTID, target.seq)
			}
		})
	}
}
