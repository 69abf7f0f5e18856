package testimg

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// LayoutData returns n deterministic random bytes keyed by seed, the
// contents of the layout image's files. Random data
// never has an all-zero block, which mke2fs -d and debugfs write would
// turn into a hole.
func LayoutData(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0x10a9))
	b := make([]byte, (n+7)&^7)
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b[:n]
}

// The layout image holds what the format matrix does not: a physically
// fragmented file (adjacent logical blocks at scattered device blocks),
// physically contiguous extents that must merge, and a written extent
// followed by an unwritten one that is physically contiguous with it (so
// that only the change of type ends the mapping).
const (
	LayoutBlockSize = 1024
	LayoutPieces    = 4000 // one-block files; every other one is freed
	LayoutFragLen   = LayoutPieces * LayoutBlockSize
	LayoutContigLen = 40 << 20 // more than one extent's 32767 blocks
	LayoutMixedLen  = 32 * LayoutBlockSize
)

// removeLayout removes the layout image (from Cleanup, which holds mu).
func removeLayout() {
	if layoutDir != "" && os.Getenv(KeepEnv) == "" {
		os.RemoveAll(layoutDir)
	}
}

var (
	layoutOnce sync.Once
	layoutDir  string
	layoutImg  string
	layoutErr  error
)

// LayoutImage builds the layout image once per process (Cleanup removes
// it):
//
//   - mke2fs -d of LayoutPieces one-block files and "contig", with 1 KiB
//     blocks, no journal and no backup superblocks, so that nothing
//     interrupts contig's blocks;
//   - debugfs removes every other one-block file and writes "frag", whose
//     first blocks fill the freed holes one by one (libext2fs allocates
//     the first free block after the previous one), and "mixed", 32 blocks
//     of which 8..23 are punched and fallocated back: unwritten, at the
//     same device blocks.
//
// internal/iomap's TestLayoutImage checks that the image really is laid
// out this way.
func LayoutImage(tb testing.TB) string {
	tb.Helper()
	layoutOnce.Do(func() { layoutImg, layoutErr = buildLayout() })
	if layoutErr != nil {
		if strings.Contains(layoutErr.Error(), "not found in PATH") {
			tb.Skip(layoutErr)
		}
		tb.Fatal(layoutErr)
	}
	return layoutImg
}

func buildLayout() (string, error) {
	for _, tool := range []string{"mkfs.ext4", "debugfs", "e2fsck"} {
		if _, err := lookTool(tool); err != nil {
			return "", err
		}
	}
	dir, err := os.MkdirTemp("", "testimg-layout-")
	if err != nil {
		return "", err
	}
	layoutDir = dir
	// Thousands of small files: creating them costs far less on a tmpfs.
	srcParent := dir
	if d, err := os.MkdirTemp("/dev/shm", "testimg-layout-src-"); err == nil {
		srcParent = d
		defer os.RemoveAll(d)
	}
	src := filepath.Join(srcParent, "src")
	for i := 0; i < LayoutPieces; i++ {
		p := filepath.Join(src, "pieces", fmt.Sprint(i/100), fmt.Sprint(i%100))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(p, LayoutData(uint64(i), LayoutBlockSize), 0o644); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(filepath.Join(src, "contig"), LayoutData(1<<40, LayoutContigLen), 0o644); err != nil {
		return "", err
	}
	for name, n := range map[string]int{"frag": LayoutFragLen, "mixed": LayoutMixedLen} {
		if err := os.WriteFile(filepath.Join(dir, name), LayoutData(uint64(n), n), 0o644); err != nil {
			return "", err
		}
	}
	conf := filepath.Join(dir, "mke2fs.conf")
	if err := os.WriteFile(conf, []byte(MkfsConfig), 0o644); err != nil {
		return "", err
	}
	img := filepath.Join(dir, "layout.img")
	if err := RunE2fsprogs(dir, conf, "mkfs.ext4", "-q", "-F", "-b", fmt.Sprint(LayoutBlockSize),
		"-O", "^has_journal,sparse_super2", "-E", "num_backup_sb=0", "-U", UUID, "-d", src, img, "96M"); err != nil {
		return "", err
	}
	var cmds []string
	for i := 0; i < LayoutPieces; i += 2 {
		cmds = append(cmds, fmt.Sprintf("rm /pieces/%d/%d", i/100, i%100))
	}
	cmds = append(cmds,
		"write frag frag",
		"write mixed mixed",
		"punch /mixed 8 23",
		"fallocate /mixed 8 23")
	cmdFile := filepath.Join(dir, "cmds")
	if err := os.WriteFile(cmdFile, []byte(strings.Join(cmds, "\n")+"\n"), 0o644); err != nil {
		return "", err
	}
	if err := RunE2fsprogs(dir, conf, "debugfs", "-w", "-f", cmdFile, img); err != nil {
		return "", err
	}
	if err := RunE2fsprogs(dir, conf, "e2fsck", "-fn", img); err != nil {
		return "", err
	}
	return img, nil
}

// RunE2fsprogs runs an e2fsprogs tool in dir with the mke2fs.conf at conf
// (MkfsConfig written to a file), for tests that build images of their
// own. debugfs's complaints, which it prints but does not exit on, are
// errors.
func RunE2fsprogs(dir, conf, tool string, args ...string) error {
	p, err := lookTool(tool)
	if err != nil {
		return err
	}
	cmd := exec.Command(p, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "MKE2FS_CONFIG="+conf, "DEBUGFS_PAGER=__none__")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v\n%s", tool, strings.Join(args, " "), err, out)
	}
	// debugfs reports failed commands on stderr but exits 0.
	if tool == "debugfs" {
		for _, line := range strings.Split(string(out), "\n") {
			if line != "" && !strings.HasPrefix(line, "debugfs") && !strings.HasPrefix(line, "Allocated inode") {
				return fmt.Errorf("debugfs: %s", line)
			}
		}
	}
	return nil
}

// FindTool finds an e2fsprogs tool in PATH or the sbin directories.
func FindTool(name string) (string, error) { return lookTool(name) }
