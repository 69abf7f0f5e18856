package hostile

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"safefs/internal/testimg"
	"safefs/internal/testmount"
)

// TestDeviceErrors mounts a loop device through mount.safe and then makes
// part of it unreadable, as a failing disk would: the loop device's file
// is truncated under the mount, so that reads of the second half of one
// large file fail with EIO at the device (loop answers EIO past the end
// of its file), and the device's cache is flushed. The reader of that
// file must get EIO, with the bytes before the failure right; the
// daemon must log the failed device range and go on serving every other
// file, byte for byte.
func TestDeviceErrors(t *testing.T) {
	testmount.Require(t)
	t.Parallel()
	testimg.RequireKernelMount(t) // losetup
	c := newCrafted(t)
	want := map[string][]byte{
		"small":       []byte("hello, world\n"),
		"dir/a":       randomData(1, 100<<10),
		"dir/b":       randomData(2, 5000),
		"dir/sub/c":   randomData(3, 1<<20),
		"after-error": randomData(4, 300<<10),
	}
	for name, data := range want {
		c.file(name, data)
	}
	tail := randomData(5, 8<<20)
	c.file("tail", tail)
	c.mkfs(32<<20, "-b", "4096")
	const bs = 4096
	blocks := c.blocks("/tail")
	cut := blocks[len(blocks)/2]
	// The cut must leave everything but tail's second half readable.
	for i, b := range blocks {
		if i < len(blocks)/2 && b >= cut {
			t.Fatalf("tail's blocks are not in order (%d at %d, cut at %d): this test needs it laid out otherwise", b, i, cut)
		}
	}
	for name := range want {
		for _, b := range c.blocks("/" + name) {
			if b >= cut {
				t.Fatalf("%s has block %d past the cut at %d: this test needs it laid out otherwise", name, b, cut)
			}
		}
	}
	meta, _ := metadataBlocks(t, c.img)
	for _, b := range meta {
		if b >= cut {
			t.Fatalf("metadata block %d lies past the cut at %d: this test needs it laid out otherwise", b, cut)
		}
	}

	out, err := exec.Command("losetup", "-f", "--show", "-r", c.img).CombinedOutput()
	if err != nil {
		t.Skipf("losetup: %v: %s", err, out)
	}
	loop := strings.TrimSpace(string(out))
	defer func() {
		if out, err := exec.Command("losetup", "-d", loop).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", loop, err, out)
		}
	}()
	svc := testmount.NewService(t)
	dir := t.TempDir()
	res := svc.Mount(t, loop, dir, "-o", "ro")
	if res.Status != 0 || res.Daemon == nil {
		t.Fatalf("mount.safe %s exited %d:\n%s", loop, res.Status, res.Output)
	}
	mounted := true
	defer func() {
		if mounted {
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	}()
	d := res.Daemon

	// The device fails from here on, from tail's middle block.
	if err := os.Truncate(c.img, cut*bs); err != nil {
		t.Fatal(err)
	}
	if fd, err := unix.Open(loop, unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
		t.Fatal(err)
	} else {
		// Drop what the device's page cache holds of the lost part.
		err := unix.IoctlSetInt(fd, unix.BLKFLSBUF, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatalf("BLKFLSBUF %s: %v", loop, err)
		}
	}
	before := sha256File(t, c.img)

	// tail: right up to the failure, then EIO.
	got, err := readFile(filepath.Join(dir, "tail"))
	if !errors.Is(err, unix.EIO) {
		t.Errorf("reading tail past the failing device range: %v, want EIO", err)
	}
	if int64(len(got)) > int64(len(blocks)/2)*bs {
		t.Errorf("read %d bytes of tail, more than the %d before the failure", len(got), int64(len(blocks)/2)*bs)
	}
	if diff := sameBytes(tail[:len(got)], got); diff != "" {
		t.Errorf("tail before the failure: %s", diff)
	}
	// Everything else, read for the first time after the failure.
	for name, data := range want {
		got, err := readFile(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
		} else if diff := sameBytes(data, got); diff != "" {
			t.Errorf("%s: %s", name, diff)
		}
	}
	// And a whole walk: no hang, nothing lost, no error but tail's.
	conn, err := testmount.Conn(dir)
	if err != nil {
		t.Fatal(err)
	}
	w := walkMount(dir, defaultLimits, func() { testmount.Abort(conn) })
	if len(w.hung) > 0 || w.lost || w.errs[unix.EIO] == 0 || w.errorCount() != w.errs[unix.EIO] {
		t.Errorf("walk: hung %q, connection lost %v, errors %s (%q); want EIO reading tail only", w.hung, w.lost, w.errSummary(), w.firstErrs)
	}
	for _, e := range w.firstErrs {
		if !strings.Contains(e, "tail") {
			t.Errorf("walk: %s", e)
		}
	}

	if err := testmount.Unmount(dir); err != nil {
		t.Fatalf("umount: %v", err)
	}
	mounted = false
	if st := d.Wait(10 * time.Second); st == nil || st.ExitCode() != 0 {
		t.Errorf("safefsd ended with %v, want status 0; log:\n%s", st, d.Log())
	}
	log := d.Log()
	checkLog(t, "device errors", log)
	if !strings.Contains(log, "device offset") || !strings.Contains(log, "input/output error") || strings.Contains(log, "fdpass") {
		t.Errorf("no log line names the failed device range:\n%s", log)
	}
	t.Logf("safefsd's log:\n%s", log)
	if after := sha256File(t, c.img); after != before {
		t.Errorf("the device was written: sha256 %s before, %s after", before, after)
	}
}

// readFile reads a file to its end or its first error, returning what it
// read.
func readFile(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []byte
	buf := make([]byte, 1<<20)
	for {
		n, err := f.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			if err == io.EOF {
				return out, nil
			}
			return out, err
		}
	}
}
