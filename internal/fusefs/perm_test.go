package fusefs_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"safefs/internal/testimg"
)

// TestPermissions compares what unprivileged users may do on the FUSE
// mount and on the kernel's mount: the kernel checks modes and POSIX ACLs
// itself on both (FUSE_POSIX_ACL, default_permissions), so reading a file
// that only an ACL entry opens to a user must work, and reading one that
// the ACL or the mode closes must fail, the same way on both.
func TestPermissions(t *testing.T) {
	requireFUSE(t)
	testimg.RequireKernelMount(t)
	img := testimg.Build(t, testimg.SpecNamed(t, "ext4-default"))
	paths := []string{
		"xattrs/acl-file",            // user:1000:r-- by ACL only
		"xattrs/acl-dir/inherited",   // access ACL derived from a default ACL
		"xattrs/acl-dir/subdir",      // likewise, a directory
		"modes/m0640", "modes/m0000", // mode bits alone
		"owners/u1000", "files/size-100",
	}
	users := []struct{ uid, gid uint32 }{{1000, 1000}, {1001, 1001}, {1002, 100}, {65534, 65534}}
	try := func(root string) map[string]string {
		// The mount points live in the test's private temp dir.
		if err := os.Chmod(filepath.Dir(root), 0o755); err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, u := range users {
			for _, p := range paths {
				// ls -d for directories, cat for files: open(2) and
				// getdents as that user, and test -r for access(2).
				script := `if [ -d "$1" ]; then ls "$1" >/dev/null; else cat "$1" >/dev/null; fi; echo "open=$?"; test -r "$1"; echo "access=$?"; test -w "$1"; echo "w=$?"`
				cmd := exec.Command("sh", "-c", script, "sh", filepath.Join(root, p))
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: u.uid, Gid: u.gid, NoSetGroups: true}}
				b, _ := cmd.CombinedOutput()
				// Messages name the path, which differs between the mounts.
				out[fmt.Sprintf("uid %d gid %d %s", u.uid, u.gid, p)] = strings.ReplaceAll(string(b), root, "MNT")
			}
		}
		return out
	}
	var want map[string]string
	kernelMount(t, img, func(dir string) { want = try(dir) })
	m := mountImage(t, img, mountConfig{})
	got := try(m.Dir)
	m.Unmount(t)
	granted := 0
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: kernel mount: %q, FUSE mount: %q", k, w, got[k])
		}
		if k == "uid 1000 gid 1000 xattrs/acl-file" && strings.Contains(w, "open=0") {
			granted++
		}
	}
	if granted != 1 {
		t.Errorf("uid 1000 cannot read xattrs/acl-file on the kernel's mount; the test no longer tests ACLs")
	}
}
