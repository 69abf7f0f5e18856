//go:build linux

package testimg

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

// Shutdown flags of EXT4_IOC_SHUTDOWN (include/uapi/linux/ext4.h).
const (
	ext4IocShutdown = 0x8004587d
	// ShutdownLogFlush commits the running transaction, then aborts the
	// journal: every operation done so far is in the log, none of the
	// newest metadata is at its home location.
	ShutdownLogFlush = 1
	// ShutdownNoLogFlush aborts the journal without committing the running
	// transaction: only what was already committed is in the log.
	ShutdownNoLogFlush = 2
)

// DirtySpec describes a filesystem image whose journal the kernel leaves
// needing recovery, as after a crash.
type DirtySpec struct {
	// Mkfs are mke2fs's options, before the image name (for instance
	// "-t", "ext4", "-b", "1024", "-O", "64bit,metadata_csum"). mke2fs runs
	// with MkfsConfig, quietly and with lazy initialisation off, so that
	// mounting does not start zeroing inode tables.
	Mkfs []string
	// SizeMB is the image size in MiB.
	SizeMB int
	// MountOpts are extra options for the read-write mount (for instance
	// "data=journal" or "journal_checksum").
	MountOpts string
	// Work runs on the mounted filesystem. fsync(2) of a file commits the
	// running transaction without writing metadata back, so it is the way
	// to end a transaction and keep it in the log.
	Work func(mnt string) error
	// Shutdown is ShutdownLogFlush (the default when zero) or
	// ShutdownNoLogFlush.
	Shutdown int
}

// MakeDirty builds the image of spec as dir/name.img and returns its path:
// mke2fs, a read-write mount on a loop device, spec.Work, then
// EXT4_IOC_SHUTDOWN and a copy of the image taken at once, before the
// unmount could write anything back. The copy is what a crash at that moment
// leaves: needs_recovery set and the committed transactions in the journal,
// their blocks not yet at home. It needs root and loop devices and skips the
// test otherwise.
func MakeDirty(t testing.TB, dir, name string, spec DirtySpec) string {
	t.Helper()
	RequireKernelMount(t)
	requireTools(t, "mke2fs")
	conf := filepath.Join(dir, "mke2fs.conf")
	if err := os.WriteFile(conf, []byte(MkfsConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	live := filepath.Join(dir, name+".live.img")
	out := filepath.Join(dir, name+".img")
	defer os.Remove(live)
	f, err := os.Create(live)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(int64(spec.SizeMB) << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	args := append([]string{"-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"}, spec.Mkfs...)
	args = append(args, live)
	if err := RunE2fsprogs(dir, conf, "mke2fs", args...); err != nil {
		t.Fatalf("testimg: %v", err)
	}
	loop, err := command("losetup", "-f", "--show", live)
	if err != nil {
		t.Skipf("testimg: loop devices unavailable: %v: %s", err, loop)
	}
	dev := strings.TrimSpace(loop)
	defer func() {
		if out, err := command("losetup", "-d", dev); err != nil {
			t.Errorf("testimg: losetup -d %s: %v: %s", dev, err, out)
		}
	}()
	mnt, err := os.MkdirTemp(dir, "mnt-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(mnt)
	opts := "rw,nodev,nosuid"
	if spec.MountOpts != "" {
		opts += "," + spec.MountOpts
	}
	if out, err := command("mount", "-t", "ext4", "-o", opts, dev, mnt); err != nil {
		t.Fatalf("testimg: mount -o %s %s: %v: %s", opts, dev, err, out)
	}
	mounted := true
	defer func() {
		if mounted {
			unmount(t, mnt)
		}
	}()
	if spec.Work != nil {
		if err := spec.Work(mnt); err != nil {
			t.Fatalf("testimg: %s: work on the mounted filesystem: %v", name, err)
		}
	}
	flag := spec.Shutdown
	if flag == 0 {
		flag = ShutdownLogFlush
	}
	if err := shutdownFS(mnt, uint32(flag)); err != nil {
		t.Fatalf("testimg: EXT4_IOC_SHUTDOWN on %s: %v", mnt, err)
	}
	if err := copyFile(live, out); err != nil {
		t.Fatalf("testimg: %v", err)
	}
	unmount(t, mnt)
	mounted = false
	return out
}

// shutdownFS calls EXT4_IOC_SHUTDOWN on the filesystem mounted at mnt.
func shutdownFS(mnt string, flags uint32) error {
	fd, err := syscall.Open(mnt, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), ext4IocShutdown, uintptr(unsafe.Pointer(&flags))); e != 0 {
		return e
	}
	return nil
}

// KernelReplay lets the kernel replay the journal of img in place: it
// attaches img read-write to a loop device and mounts it read-only, which
// makes ext4 recover the journal (writing the replayed blocks to the image)
// while skipping the writes of a read-write mount, then unmounts. It
// returns mount(8)'s error and output when the kernel refuses the mount;
// the kernel may still have replayed part of the journal then, which is
// the point of looking at the image afterwards. It skips the test without
// root or loop devices.
func KernelReplay(t testing.TB, img string) error {
	t.Helper()
	return kernelMount(t, img, "ro,nodev,nosuid,noexec")
}

// KernelMountReadWrite is KernelReplay with a read-write mount, for what a
// read-only mount cannot do: ext4 replays fast commits only read-write. It
// also processes the orphan list and updates the superblock, as any
// read-write mount does.
func KernelMountReadWrite(t testing.TB, img string) error {
	t.Helper()
	return kernelMount(t, img, "rw,nodev,nosuid,noexec")
}

func kernelMount(t testing.TB, img, opts string) error {
	t.Helper()
	RequireKernelMount(t)
	loop, err := command("losetup", "-f", "--show", img)
	if err != nil {
		t.Skipf("testimg: loop devices unavailable: %v: %s", err, loop)
	}
	dev := strings.TrimSpace(loop)
	defer func() {
		if out, err := command("losetup", "-d", dev); err != nil {
			t.Errorf("testimg: losetup -d %s: %v: %s", dev, err, out)
		}
	}()
	mnt, err := os.MkdirTemp("", "testimg-replay-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(mnt)
	if out, err := command("mount", "-t", "ext4", "-o", opts, dev, mnt); err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(out))
	}
	unmount(t, mnt)
	return nil
}

// CopyFile copies src to dst (created or truncated), for tests that give a
// copy of an image to a tool that writes.
func CopyFile(src, dst string) error { return copyFile(src, dst) }

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
