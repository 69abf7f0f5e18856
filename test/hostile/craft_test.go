package hostile

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"safefs/internal/testimg"
)

// An image of the tests' own: mke2fs -d from a tree written here, with
// the repository's mke2fs.conf (testimg.MkfsConfig), then whatever the
// test changes with debugfs or by writing structures into the file.

// crafted is an image being made, and where.
type crafted struct {
	t    *testing.T
	dir  string // work directory: conf, source tree, image
	src  string
	conf string
	img  string
}

// newCrafted prepares a source tree under a fresh directory.
func newCrafted(t *testing.T) *crafted {
	t.Helper()
	dir := t.TempDir()
	c := &crafted{t: t, dir: dir, src: filepath.Join(dir, "src"), conf: filepath.Join(dir, "mke2fs.conf"), img: filepath.Join(dir, "image")}
	if err := os.WriteFile(c.conf, []byte(testimg.MkfsConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(c.src, 0o755); err != nil {
		t.Fatal(err)
	}
	return c
}

// file writes a file of the source tree.
func (c *crafted) file(name string, data []byte) {
	c.t.Helper()
	p := filepath.Join(c.src, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		c.t.Fatal(err)
	}
}

// mkfs makes the image of size bytes from the source tree: ext4 (unless
// args give -t) without a journal, with extra mke2fs arguments.
func (c *crafted) mkfs(size int64, args ...string) {
	c.t.Helper()
	if err := os.WriteFile(c.img, nil, 0o644); err != nil {
		c.t.Fatal(err)
	}
	if err := os.Truncate(c.img, size); err != nil {
		c.t.Fatal(err)
	}
	a := []string{"-q", "-F", "-O", "^has_journal", "-U", testimg.UUID}
	if !slices.Contains(args, "-t") {
		a = append(a, "-t", "ext4")
	}
	a = append(a, args...)
	a = append(a, "-d", c.src, c.img)
	c.run("mke2fs", a...)
}

// run runs an e2fsprogs tool.
func (c *crafted) run(tool string, args ...string) {
	c.t.Helper()
	if err := testimg.RunE2fsprogs(c.dir, c.conf, tool, args...); err != nil {
		c.t.Fatal(err)
	}
}

// debugfs runs debugfs -w with the commands, one per line, from a file.
func (c *crafted) debugfs(cmds []string) {
	c.t.Helper()
	f := filepath.Join(c.dir, "debugfs.cmds")
	if err := os.WriteFile(f, []byte(strings.Join(cmds, "\n")+"\n"), 0o644); err != nil {
		c.t.Fatal(err)
	}
	c.run("debugfs", "-w", "-f", f, c.img)
}

// blocks returns the device blocks of a file, in file order, as debugfs
// lists them.
func (c *crafted) blocks(path string) []int64 {
	c.t.Helper()
	var out []int64
	for _, f := range strings.Fields(testimg.Debugfs(c.t, c.img, "blocks "+path)) {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			c.t.Fatalf("debugfs blocks %s: %q", path, f)
		}
		out = append(out, n)
	}
	return out
}

var imapLine = regexp.MustCompile(`located at block (\d+), offset 0x([0-9a-f]+)`)

// inodeOffset returns where in the image the inode of path lies, as
// debugfs's imap says, and the inode's number.
func (c *crafted) inodeOffset(path string, bs int64) (off int64, ino int) {
	c.t.Helper()
	out := testimg.Debugfs(c.t, c.img, "imap "+path)
	m := imapLine.FindStringSubmatch(out)
	n := regexp.MustCompile(`Inode (\d+) is part of block group`).FindStringSubmatch(out)
	if m == nil || n == nil {
		c.t.Fatalf("debugfs imap %s: %q", path, out)
	}
	blk, _ := strconv.ParseInt(m[1], 10, 64)
	o, _ := strconv.ParseInt(m[2], 16, 64)
	ino, _ = strconv.Atoi(n[1])
	return blk*bs + o, ino
}

// writeAt writes data into the image at off.
func (c *crafted) writeAt(data []byte, off int64) {
	c.t.Helper()
	f, err := os.OpenFile(c.img, os.O_RDWR, 0)
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		c.t.Fatal(err)
	}
}

// randomData returns n bytes that no other call with another seed
// returns, for file contents whose every block is distinct.
func randomData(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 0x5afe))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// sameBytes describes how got differs from want, "" if it does not.
func sameBytes(want, got []byte) string {
	if bytes.Equal(want, got) {
		return ""
	}
	if len(want) != len(got) {
		return fmt.Sprintf("%d bytes, want %d", len(got), len(want))
	}
	for i := range want {
		if want[i] != got[i] {
			return fmt.Sprintf("differs from byte %d on", i)
		}
	}
	return "differs"
}
