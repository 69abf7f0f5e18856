package iomap_test

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

	"safefs/internal/ext4"
	"safefs/internal/iomap"
	"safefs/internal/testimg"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testimg.Cleanup()
	if layoutDir != "" && os.Getenv(testimg.KeepEnv) == "" {
		os.RemoveAll(layoutDir)
	}
	os.Exit(code)
}

// openImage opens img with internal/ext4 and returns an engine on it, the
// device being the image file itself.
func openImage(tb testing.TB, img string) (*ext4.FS, *iomap.Engine) {
	tb.Helper()
	f, err := os.Open(img)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Close() })
	st, err := f.Stat()
	if err != nil {
		tb.Fatal(err)
	}
	fsys, err := ext4.Open(f, &ext4.Options{DeviceSize: st.Size()})
	if err != nil {
		tb.Fatalf("%s: %v", img, err)
	}
	return fsys, iomap.New(fsys, f)
}

// resolve looks up a "/"-separated path from the root.
func resolve(tb testing.TB, fsys *ext4.FS, p string) *ext4.Inode {
	tb.Helper()
	in, err := fsys.Inode(2)
	for _, part := range strings.Split(p, "/") {
		if err != nil {
			break
		}
		if part == "" {
			continue
		}
		var ino uint32
		if ino, _, err = fsys.Lookup(in, []byte(part)); err == nil {
			in, err = fsys.Inode(ino)
		}
	}
	if err != nil {
		tb.Fatalf("%s: %v", p, err)
	}
	return in
}

// randData returns n deterministic random bytes keyed by seed. Random data
// never has an all-zero block, which mke2fs -d and debugfs write would
// turn into a hole.
func randData(seed uint64, n int) []byte {
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
	layoutBlockSize = 1024
	layoutPieces    = 4000 // one-block files; every other one is freed
	layoutFragLen   = layoutPieces * layoutBlockSize
	layoutContigLen = 40 << 20 // more than one extent's 32767 blocks
	layoutMixedLen  = 32 * layoutBlockSize
)

var (
	layoutOnce sync.Once
	layoutDir  string
	layoutImg  string
	layoutErr  error
)

// layoutImage builds the layout image once per process:
//
//   - mke2fs -d of layoutPieces one-block files and "contig", with 1 KiB
//     blocks, no journal and no backup superblocks, so that nothing
//     interrupts contig's blocks;
//   - debugfs removes every other one-block file and writes "frag", whose
//     first blocks fill the freed holes one by one (libext2fs allocates
//     the first free block after the previous one), and "mixed", 32 blocks
//     of which 8..23 are punched and fallocated back: unwritten, at the
//     same device blocks.
//
// TestLayoutImage checks that the image really is laid out this way.
func layoutImage(tb testing.TB) string {
	tb.Helper()
	layoutOnce.Do(func() { layoutImg, layoutErr = buildLayout() })
	if layoutErr != nil {
		if strings.Contains(layoutErr.Error(), "executable file not found") {
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
	dir, err := os.MkdirTemp("", "iomap-layout-")
	if err != nil {
		return "", err
	}
	layoutDir = dir
	// Thousands of small files: creating them costs far less on a tmpfs.
	srcParent := dir
	if d, err := os.MkdirTemp("/dev/shm", "iomap-layout-src-"); err == nil {
		srcParent = d
		defer os.RemoveAll(d)
	}
	src := filepath.Join(srcParent, "src")
	for i := 0; i < layoutPieces; i++ {
		p := filepath.Join(src, "pieces", fmt.Sprint(i/100), fmt.Sprint(i%100))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(p, randData(uint64(i), layoutBlockSize), 0o644); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(filepath.Join(src, "contig"), randData(1<<40, layoutContigLen), 0o644); err != nil {
		return "", err
	}
	for name, n := range map[string]int{"frag": layoutFragLen, "mixed": layoutMixedLen} {
		if err := os.WriteFile(filepath.Join(dir, name), randData(uint64(n), n), 0o644); err != nil {
			return "", err
		}
	}
	conf := filepath.Join(dir, "mke2fs.conf")
	if err := os.WriteFile(conf, []byte(testimg.MkfsConfig), 0o644); err != nil {
		return "", err
	}
	img := filepath.Join(dir, "layout.img")
	if err := run(dir, conf, "mkfs.ext4", "-q", "-F", "-b", fmt.Sprint(layoutBlockSize),
		"-O", "^has_journal,sparse_super2", "-E", "num_backup_sb=0", "-U", testimg.UUID, "-d", src, img, "96M"); err != nil {
		return "", err
	}
	var cmds []string
	for i := 0; i < layoutPieces; i += 2 {
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
	if err := run(dir, conf, "debugfs", "-w", "-f", cmdFile, img); err != nil {
		return "", err
	}
	if err := run(dir, conf, "e2fsck", "-fn", img); err != nil {
		return "", err
	}
	return img, nil
}

// run runs an e2fsprogs tool in dir, with our mke2fs.conf.
func run(dir, conf, tool string, args ...string) error {
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

// lookTool finds a tool in PATH or the sbin directories.
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		if p := filepath.Join(d, name); fileExists(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: executable file not found", name)
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
