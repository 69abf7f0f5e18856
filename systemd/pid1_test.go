package systemd

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"safefs/internal/sandbox"
	"safefs/internal/testimg"
	"safefs/internal/testmachine"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testimg.Cleanup()
	os.Exit(code)
}

// TestSystemdMount is the real thing: safefs installed with make install
// into a machine whose PID 1 is systemd; safefsd.socket enabled and
// started; `mount -t safe.ext4 /dev/loopN DIR` through util-linux mount(8)
// and through an fstab line. Each mount starts one safefsd@ instance under
// a dynamic user, confined (no capabilities, no_new_privs, seccomp), whose
// view equals the kernel's ext4; unmounting ends the instance.
func TestSystemdMount(t *testing.T) {
	m := testmachine.Boot(t, func(root string) {
		// Install exactly as a person would, into the machine's root.
		if out, err := exec.Command("make", "-C", "..", "install", "DESTDIR="+root).CombinedOutput(); err != nil {
			t.Fatalf("make install DESTDIR=%s: %v\n%s", root, err, out)
		}
	})
	m.Must("systemctl", "enable", "--now", "safefsd.socket")
	if st, err := os.Stat(m.HostPath("/run/safefsd.sock")); err != nil || st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
		t.Fatalf("/run/safefsd.sock: %v %v, want a socket with mode 0600", err, st)
	}

	img := testimg.Build(t, mountSpec)
	want := testimg.KernelWalk(t, img)
	dev := testmachine.LoopDevice(t, img)
	const dir = "/mnt/safefs"
	m.Must("mkdir", "-p", dir)

	// The loop device's own read-ahead, which a mount must leave alone.
	var ds unix.Stat_t
	if err := unix.Stat(dev, &ds); err != nil {
		t.Fatal(err)
	}
	bdi := fmt.Sprintf("/sys/class/bdi/%d:%d", unix.Major(ds.Rdev), unix.Minor(ds.Rdev))
	devRA0, _ := os.ReadFile(bdi + "/read_ahead_kb")
	check := func(how string) {
		t.Helper()
		info := m.Must("findmnt", "-n", "-o", "SOURCE,FSTYPE,OPTIONS", dir)
		f := strings.Fields(info)
		if len(f) != 3 || f[0] != dev || f[1] != "fuseblk.ext4" {
			t.Errorf("%s: findmnt %s: %q, want %s fuseblk.ext4", how, dir, info, dev)
		}
		for _, o := range []string{"ro", "nosuid", "nodev"} {
			if len(f) == 3 && !strings.Contains(","+f[2]+",", ","+o+",") {
				t.Errorf("%s: mount options %q lack %s", how, f[2], o)
			}
		}
		units := m.Must("systemctl", "list-units", "--no-legend", "--plain", "--state=running", "safefsd@*")
		if n := len(strings.Split(strings.TrimSpace(units), "\n")); strings.TrimSpace(units) == "" || n != 1 {
			t.Errorf("%s: running safefsd@ instances: %q, want one", how, units)
		}
		pids := m.Daemons()
		if len(pids) != 1 {
			t.Fatalf("%s: safefsd processes %v, want one", how, pids)
		}
		st, err := sandbox.ReadStatus(fmt.Sprintf("/proc/%d/status", pids[0]))
		if err != nil {
			t.Fatal(err)
		}
		if st.Uid == 0 || st.Gid == 0 || st.CapEff != 0 || !st.NoNewPrivs || !st.Seccomp {
			t.Errorf("%s: the daemon is not confined: %+v", how, st)
		}
		// A dynamic user, not nobody or a fixed system user.
		if st.Uid < 61184 || st.Uid > 65519 {
			t.Errorf("%s: the daemon runs as uid %d, not a dynamic user", how, st.Uid)
		}
		// mount.safe raised the FUSE mount's read-ahead (its bdi is
		// "MAJ:MIN-fuseblk") to four of the daemon's 1 MiB requests,
		// and left the loop device's alone.
		fuseRA, _ := os.ReadFile(bdi + "-fuseblk/read_ahead_kb")
		devRA, _ := os.ReadFile(bdi + "/read_ahead_kb")
		if strings.TrimSpace(string(fuseRA)) != "4096" || string(devRA) != string(devRA0) {
			t.Errorf("%s: read-ahead of the mount %q KiB, of %s %q KiB (was %q): want 4096 on the mount, the device's unchanged",
				how, fuseRA, dev, devRA, devRA0)
		}
		testimg.Compare(t, want, testimg.Walk(t, m.HostPath(dir)), testimg.CompareOpts{})
		m.Must("umount", dir)
		m.WaitGone(how)
	}

	out := m.Must("mount", "-t", "safe.ext4", dev, dir)
	if !strings.Contains(out, "read-only") {
		t.Errorf("mount without ro: no read-only warning in %q", out)
	}
	check("mount -t safe.ext4")

	m.Must("mount", "-t", "safe.ext4", "-o", "ro,noexec", dev, dir)
	if opts := m.Must("findmnt", "-n", "-o", "OPTIONS", dir); !strings.Contains(opts, "noexec") {
		t.Errorf("mount -o ro,noexec: options %q", opts)
	}
	check("mount -o ro,noexec")

	fstab := m.Root + "/etc/fstab"
	old, _ := os.ReadFile(fstab)
	line := dev + " " + dir + " safe.ext4 ro,noauto 0 0\n"
	if err := os.WriteFile(fstab, append(old, line...), 0o644); err != nil {
		t.Fatal(err)
	}
	m.Must("mount", dir)
	check("fstab")

	// Refusals come back through mount(8) with the daemon's reason, and
	// leave nothing mounted and no instance behind.
	junk := filepath.Join(t.TempDir(), "junk.img")
	if err := os.WriteFile(junk, bytes.Repeat([]byte{0x5a}, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	jdev := testmachine.LoopDevice(t, junk)
	out, err := m.Run("mount", "-t", "safe.ext4", "-o", "ro", jdev, dir)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 32 || !strings.Contains(out, jdev) || !strings.Contains(out, "no ext2/ext3/ext4 superblock") {
		t.Errorf("mounting a device of junk: %v, want exit 32 naming %s and the reason:\n%s", err, jdev, out)
	}
	if info, _ := m.Run("findmnt", "-n", dir); strings.TrimSpace(info) != "" {
		t.Errorf("a refused mount left %q", info)
	}
	m.WaitGone("refusal")

	// The daemon's log goes to the journal, naming the device.
	logs := m.Must("journalctl", "--no-pager", "-o", "cat", "-u", "safefsd@*")
	if !strings.Contains(logs, jdev) {
		t.Errorf("the journal has no safefsd line naming %s:\n%s", jdev, logs)
	}
}
