// Package fusemount creates FUSE mounts with the new mount API (fsopen,
// fsconfig, fsmount, move_mount), in two steps: Create makes the superblock
// detached, which makes the kernel send INIT on the /dev/fuse descriptor;
// Attach puts it in place once the server has answered. Closing the
// context between the two leaves nothing mounted. mount.safe uses it, and
// so do the tests that mount without mount.safe.
package fusemount

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Config describes the FUSE superblock to create.
type Config struct {
	// Block makes a "fuseblk" mount, for which the kernel claims Source
	// (a block device) exclusively; otherwise "fuse".
	Block     bool
	FuseFD    int    // the open /dev/fuse descriptor
	Source    string // shown in /proc/mounts
	Subtype   string // the mount shows as fuse.SUBTYPE / fuseblk.SUBTYPE
	MaxRead   uint32 // 0: the kernel's default
	BlockSize uint32 // fuseblk only; 0: the kernel's default
	ReadOnly  bool
}

// FSType is the filesystem type Create asks for.
func (c Config) FSType() string {
	if c.Block {
		return "fuseblk"
	}
	return "fuse"
}

// Create creates the superblock, detached, and returns the filesystem
// context's descriptor. allow_other makes the mount usable by every user,
// as a kernel mount is; default_permissions makes the kernel check modes
// and, with the ACLs the server provides, POSIX ACLs itself. Errors wrap
// the errno, with the kernel's own messages appended.
func Create(c Config) (int, error) {
	fstype := c.FSType()
	fsfd, err := unix.Fsopen(fstype, unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("fsopen %s: %w", fstype, err)
	}
	params := [][2]string{
		{"fd", strconv.Itoa(c.FuseFD)},
		{"rootmode", "40000"},
		{"user_id", "0"},
		{"group_id", "0"},
		{"source", c.Source},
		{"subtype", c.Subtype},
	}
	if c.MaxRead > 0 {
		params = append(params, [2]string{"max_read", strconv.FormatUint(uint64(c.MaxRead), 10)})
	}
	if c.Block && c.BlockSize > 0 {
		params = append(params, [2]string{"blksize", strconv.FormatUint(uint64(c.BlockSize), 10)})
	}
	for _, kv := range params {
		if err := unix.FsconfigSetString(fsfd, kv[0], kv[1]); err != nil {
			msg := Log(fsfd)
			unix.Close(fsfd)
			return -1, fmt.Errorf("setting %s=%s on the %s mount: %w%s", kv[0], kv[1], fstype, err, msg)
		}
	}
	flags := []string{"allow_other", "default_permissions"}
	if c.ReadOnly {
		flags = append(flags, "ro")
	}
	for _, fl := range flags {
		if err := unix.FsconfigSetFlag(fsfd, fl); err != nil {
			msg := Log(fsfd)
			unix.Close(fsfd)
			return -1, fmt.Errorf("setting %s on the %s mount: %w%s", fl, fstype, err, msg)
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		msg := Log(fsfd)
		unix.Close(fsfd)
		return -1, fmt.Errorf("creating the %s mount: %w%s", fstype, err, msg)
	}
	return fsfd, nil
}

// Attach mounts the created superblock at target with the MOUNT_ATTR_*
// attributes attrs.
func Attach(fsfd int, target string, attrs int) error {
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, attrs)
	if err != nil {
		return fmt.Errorf("fsmount: %w%s", err, Log(fsfd))
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attaching at %s: %w", target, err)
	}
	return nil
}

// Log returns the messages the kernel left in a filesystem context, as
// " (msg; msg)", or "".
func Log(fsfd int) string {
	var out []string
	buf := make([]byte, 1024)
	for range 16 {
		n, err := unix.Read(fsfd, buf)
		if err != nil || n <= 0 {
			break
		}
		out = append(out, strings.TrimSpace(string(buf[:n])))
	}
	if len(out) == 0 {
		return ""
	}
	return " (" + strings.Join(out, "; ") + ")"
}

// RaiseReadAhead sets the read-ahead of the mount at target to kb KiB:
// buffered reads are cut into requests no larger than it (128 KiB by
// default), whatever max_read allows.
//
// The mount's st_dev names its backing device info, except that a fuseblk
// mount reports the block device's number while FUSE registers its own
// bdi as "MAJ:MIN-fuseblk": the block device's own bdi ("MAJ:MIN") must
// not be touched (it would only change the device's read-ahead, for good).
func RaiseReadAhead(target string, kb int) error {
	var st unix.Stat_t
	if err := unix.Stat(target, &st); err != nil {
		return err
	}
	base := fmt.Sprintf("/sys/class/bdi/%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev))
	bdi := base + "-fuseblk"
	if _, err := os.Stat(bdi); err != nil {
		bdi = base
	}
	return os.WriteFile(bdi+"/read_ahead_kb", []byte(strconv.Itoa(kb)), 0)
}
