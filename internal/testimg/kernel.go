//go:build linux

package testimg

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// KernelWalk mounts img read-only with the kernel's ext4 driver and returns
// Walk of the mounted root, the reference a userspace reader is compared
// with. It needs root and loop devices and skips the test otherwise. The
// image is attached with losetup -r and mounted with -o ro (plus noload when
// the image has a journal, so that not even journal replay can change what
// is read); it is always unmounted and detached before KernelWalk returns,
// also when the walk fails.
func KernelWalk(t testing.TB, img string) map[string]Entry {
	t.Helper()
	var out map[string]Entry
	var walkErr error
	withMount(t, img, false, func(mnt string) {
		out, walkErr = walk(mnt)
	})
	if walkErr != nil {
		t.Fatalf("testimg: walking mounted %s: %v", img, walkErr)
	}
	return out
}

// KernelStatfs returns statfs(2) of the root of img mounted as by
// KernelWalk: block and inode counts as the kernel computes them.
func KernelStatfs(t testing.TB, img string) syscall.Statfs_t {
	t.Helper()
	var st syscall.Statfs_t
	var err error
	withMount(t, img, false, func(mnt string) {
		err = syscall.Statfs(mnt, &st)
	})
	if err != nil {
		t.Fatalf("testimg: statfs of mounted %s: %v", img, err)
	}
	return st
}

// RequireKernelMount skips the test unless KernelWalk can work here: root,
// losetup and mount present, and a loop control device.
func RequireKernelMount(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("testimg: kernel oracle needs root")
	}
	requireTools(t, "losetup", "mount", "umount")
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("testimg: no loop devices: %v", err)
	}
}

// withMount attaches img to a loop device, mounts it under a fresh temp dir
// (read-only unless rw, which only Build uses), runs fn, then unmounts and
// detaches. The cleanup is a defer rather than t.Cleanup so that the image
// is released before the caller continues, and so that it also runs when fn
// (or t.Fatal) unwinds the goroutine.
func withMount(t testing.TB, img string, rw bool, fn func(mnt string)) {
	t.Helper()
	RequireKernelMount(t)
	sb, err := readSuperblock(img)
	if err != nil {
		t.Fatalf("testimg: %s: %v", img, err)
	}
	loArgs := []string{"-f", "--show", img}
	if !rw {
		loArgs = []string{"-f", "--show", "-r", img}
	}
	out, err := command("losetup", loArgs...)
	if err != nil {
		t.Skipf("testimg: loop devices unavailable: losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(out)
	defer func() {
		if out, err := command("losetup", "-d", dev); err != nil {
			t.Errorf("testimg: losetup -d %s: %v: %s", dev, err, out)
		}
	}()
	mnt, err := os.MkdirTemp("", "testimg-mnt-")
	if err != nil {
		t.Fatalf("testimg: %v", err)
	}
	defer os.Remove(mnt)
	opts := "ro,nodev,nosuid,noexec"
	if rw {
		opts = "rw,nodev,nosuid,noexec"
	} else if sb.compat&compatHasJournal != 0 {
		opts += ",noload"
	}
	// -t ext4 also mounts ext2 and ext3 images: the ext4 driver serves
	// all three, and it is the one whose view matters.
	if out, err := command("mount", "-t", "ext4", "-o", opts, dev, mnt); err != nil {
		msg := strings.ToLower(out)
		if strings.Contains(msg, "permission denied") || strings.Contains(msg, "must be superuser") ||
			strings.Contains(msg, "operation not permitted") {
			t.Skipf("testimg: mounting not permitted here: %v: %s", err, out)
		}
		t.Fatalf("testimg: mount -t ext4 -o %s %s (%s): %v: %s", opts, dev, img, err, out)
	}
	defer unmount(t, mnt)
	fn(mnt)
}

// unmount retries briefly because a just-closed file can keep the mount busy
// for a moment, and falls back to a lazy unmount so that the loop device can
// still be detached (it is freed once the lazy unmount completes).
func unmount(t testing.TB, mnt string) {
	t.Helper()
	var out string
	var err error
	for i := 0; i < 20; i++ {
		if out, err = command("umount", mnt); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("testimg: umount %s: %v: %s; trying lazy unmount", mnt, err, out)
	if out, err := command("umount", "-l", mnt); err != nil {
		t.Errorf("testimg: umount -l %s: %v: %s", mnt, err, out)
	}
}

// command runs a system tool and returns its combined output.
func command(name string, args ...string) (string, error) {
	p, err := lookTool(name)
	if err != nil {
		return "", err
	}
	cmd := exec.Command(p, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	b, err := cmd.CombinedOutput()
	if err != nil {
		return string(b), fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return string(b), nil
}
