package systemd

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"safefs/internal/sandbox"
	"safefs/internal/testimg"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testimg.Cleanup()
	os.Exit(code)
}

// machine is a systemd running as PID 1 in its own PID and mount namespace,
// with an overlay of the host's / as its root, so that installing into it
// and starting units changes nothing on the host.
type machine struct {
	t    *testing.T
	base string    // tmpfs holding the overlay
	root string    // the machine's /, as seen from the host
	cmd  *exec.Cmd // unshare, whose child is systemd
	pid  int       // systemd, in the host's PID namespace
	logs bytes.Buffer
}

// bootMachine starts systemd as PID 1 over an overlay of the host's root
// (the recipe in the project's test notes) and waits until it runs. It
// boots basic.target only: nothing the host happens to have installed
// (databases, display managers) is started.
func bootMachine(t *testing.T) *machine {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("booting systemd in a namespace needs root")
	}
	for _, tool := range []string{"unshare", "nsenter", "losetup", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	if _, err := os.Stat("/lib/systemd/systemd"); err != nil {
		t.Skip("systemd not installed")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	m := &machine{t: t, base: t.TempDir()}
	m.root = filepath.Join(m.base, "root")
	t.Cleanup(m.shutdown)
	mnt := func(src, target, fstype, opts string, flags uintptr) {
		t.Helper()
		if err := unix.Mount(src, target, fstype, flags, opts); err != nil {
			t.Fatalf("mount %s on %s: %v", fstype, target, err)
		}
	}
	mnt("tmpfs", m.base, "tmpfs", "mode=0755", 0)
	for _, d := range []string{"u", "w", "root"} {
		os.Mkdir(filepath.Join(m.base, d), 0o755)
	}
	mnt("overlay", m.root, "overlay", "lowerdir=/,upperdir="+m.base+"/u,workdir="+m.base+"/w", 0)
	mnt("proc", m.root+"/proc", "proc", "", 0)
	mnt("/sys", m.root+"/sys", "", "", unix.MS_BIND|unix.MS_REC)
	mnt("/dev", m.root+"/dev", "", "", unix.MS_BIND|unix.MS_REC)
	mnt("tmpfs", m.root+"/run", "tmpfs", "mode=0755", 0)
	mnt("tmpfs", m.root+"/tmp", "tmpfs", "mode=1777", 0)

	// Install exactly as a person would, into the machine's root.
	if out, err := exec.Command("make", "-C", "..", "install", "DESTDIR="+m.root).CombinedOutput(); err != nil {
		t.Fatalf("make install DESTDIR=%s: %v\n%s", m.root, err, out)
	}

	m.cmd = exec.Command("unshare", "--pid", "--fork", "--mount", "--uts", "--propagation", "private",
		"chroot", m.root, "/usr/bin/env", "container=other", "/lib/systemd/systemd", "--unit=basic.target")
	m.cmd.Stdout, m.cmd.Stderr = &m.logs, &m.logs
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("starting systemd: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for m.pid == 0 && time.Now().Before(deadline) {
		children, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", m.cmd.Process.Pid, m.cmd.Process.Pid))
		if f := strings.Fields(string(children)); len(f) > 0 {
			m.pid, _ = strconv.Atoi(f[0])
		} else {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if m.pid == 0 {
		t.Fatalf("systemd did not start:\n%s", m.logs.String())
	}
	for {
		out, _ := m.run("systemctl", "is-system-running")
		state := strings.TrimSpace(out)
		if state == "running" || state == "degraded" {
			break
		}
		if time.Now().After(deadline) {
			failed, _ := m.run("systemctl", "--failed", "--no-legend")
			t.Fatalf("systemd is %q after 30 s; failed units:\n%s\n%s", state, failed, m.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return m
}

// run runs a command inside the machine and returns its combined output.
func (m *machine) run(args ...string) (string, error) {
	full := append([]string{"-t", strconv.Itoa(m.pid), "-a", "chroot", m.root}, args...)
	cmd := exec.Command("nsenter", full...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		return "", err
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		return out.String(), fmt.Errorf("%s: no answer in 60 s", strings.Join(args, " "))
	}
}

// must runs a command inside the machine and fails the test if it fails.
func (m *machine) must(args ...string) string {
	m.t.Helper()
	out, err := m.run(args...)
	if err != nil {
		m.t.Fatalf("in the machine, %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// shutdown powers the machine off and removes its mounts.
func (m *machine) shutdown() {
	if m.cmd != nil && m.cmd.Process != nil {
		if m.pid != 0 {
			m.run("systemctl", "poweroff")
		}
		done := make(chan struct{})
		go func() { m.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			m.t.Errorf("systemd did not power off in 30 s; killing it")
			if m.pid != 0 {
				unix.Kill(m.pid, unix.SIGKILL)
			}
			m.cmd.Process.Kill()
			<-done
		}
	}
	// Lazily, so that a mount left inside by a failed test cannot keep
	// the overlay busy.
	if err := unix.Unmount(m.base, unix.MNT_DETACH); err != nil && err != unix.EINVAL {
		m.t.Errorf("unmounting %s: %v", m.base, err)
	}
}

// hostPath is the path on the host of path inside the machine, through
// systemd's root: mounts made inside the machine's mount namespace are
// visible there.
func (m *machine) hostPath(path string) string {
	return fmt.Sprintf("/proc/%d/root%s", m.pid, path)
}

// loopDevice attaches img to a read-only loop device and returns its path.
func loopDevice(t *testing.T, img string) string {
	t.Helper()
	out, err := exec.Command("losetup", "--find", "--show", "--read-only", img).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup %s: %v\n%s", img, err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}

// daemons returns the host PIDs of the safefsd processes running inside
// the machine (started by its systemd from the installed path).
func (m *machine) daemons() []int {
	var pids []int
	myNS, _ := os.Readlink("/proc/self/ns/pid")
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
		stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if strings.HasPrefix(string(cmdline), "/usr/libexec/safefs/safefsd\x00") && ns != myNS && !strings.Contains(string(stat), ") Z ") {
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitGone waits until no safefsd@ instance is loaded and no daemon runs.
func (m *machine) waitGone(what string) {
	m.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		units, _ := m.run("systemctl", "list-units", "--all", "--no-legend", "--plain", "safefsd@*")
		if strings.TrimSpace(units) == "" && len(m.daemons()) == 0 {
			return
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("%s: safefsd still there 15 s later: units %q, daemons %v", what, units, m.daemons())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSystemdMount is the real thing: safefs installed with make install
// into a machine whose PID 1 is systemd; safefsd.socket enabled and
// started; `mount -t safe.ext4 /dev/loopN DIR` through util-linux mount(8)
// and through an fstab line. Each mount starts one safefsd@ instance under
// a dynamic user, confined (no capabilities, no_new_privs, seccomp), whose
// view equals the kernel's ext4; unmounting ends the instance.
func TestSystemdMount(t *testing.T) {
	m := bootMachine(t)
	m.must("systemctl", "enable", "--now", "safefsd.socket")
	if st, err := os.Stat(m.hostPath("/run/safefsd.sock")); err != nil || st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
		t.Fatalf("/run/safefsd.sock: %v %v, want a socket with mode 0600", err, st)
	}

	img := testimg.Build(t, testimg.Spec{Name: "systemd", MkfsArgs: []string{"-t", "ext4"}, SizeMB: 64, Tree: testimg.TreeFull, NeedsRoot: true, Htree: true})
	want := testimg.KernelWalk(t, img)
	dev := loopDevice(t, img)
	const dir = "/mnt/safefs"
	m.must("mkdir", "-p", dir)

	// The loop device's own read-ahead, which a mount must leave alone.
	var ds unix.Stat_t
	if err := unix.Stat(dev, &ds); err != nil {
		t.Fatal(err)
	}
	bdi := fmt.Sprintf("/sys/class/bdi/%d:%d", unix.Major(ds.Rdev), unix.Minor(ds.Rdev))
	devRA0, _ := os.ReadFile(bdi + "/read_ahead_kb")
	check := func(how string) {
		t.Helper()
		info := m.must("findmnt", "-n", "-o", "SOURCE,FSTYPE,OPTIONS", dir)
		f := strings.Fields(info)
		if len(f) != 3 || f[0] != dev || f[1] != "fuseblk.ext4" {
			t.Errorf("%s: findmnt %s: %q, want %s fuseblk.ext4", how, dir, info, dev)
		}
		for _, o := range []string{"ro", "nosuid", "nodev"} {
			if len(f) == 3 && !strings.Contains(","+f[2]+",", ","+o+",") {
				t.Errorf("%s: mount options %q lack %s", how, f[2], o)
			}
		}
		units := m.must("systemctl", "list-units", "--no-legend", "--plain", "--state=running", "safefsd@*")
		if n := len(strings.Split(strings.TrimSpace(units), "\n")); strings.TrimSpace(units) == "" || n != 1 {
			t.Errorf("%s: running safefsd@ instances: %q, want one", how, units)
		}
		pids := m.daemons()
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
		testimg.Compare(t, want, testimg.Walk(t, m.hostPath(dir)), testimg.CompareOpts{})
		m.must("umount", dir)
		m.waitGone(how)
	}

	out := m.must("mount", "-t", "safe.ext4", dev, dir)
	if !strings.Contains(out, "read-only") {
		t.Errorf("mount without ro: no read-only warning in %q", out)
	}
	check("mount -t safe.ext4")

	m.must("mount", "-t", "safe.ext4", "-o", "ro,noexec", dev, dir)
	if opts := m.must("findmnt", "-n", "-o", "OPTIONS", dir); !strings.Contains(opts, "noexec") {
		t.Errorf("mount -o ro,noexec: options %q", opts)
	}
	check("mount -o ro,noexec")

	fstab := m.root + "/etc/fstab"
	old, _ := os.ReadFile(fstab)
	line := dev + " " + dir + " safe.ext4 ro,noauto 0 0\n"
	if err := os.WriteFile(fstab, append(old, line...), 0o644); err != nil {
		t.Fatal(err)
	}
	m.must("mount", dir)
	check("fstab")

	// Refusals come back through mount(8) with the daemon's reason, and
	// leave nothing mounted and no instance behind.
	junk := filepath.Join(t.TempDir(), "junk.img")
	if err := os.WriteFile(junk, bytes.Repeat([]byte{0x5a}, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	jdev := loopDevice(t, junk)
	out, err := m.run("mount", "-t", "safe.ext4", "-o", "ro", jdev, dir)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 32 || !strings.Contains(out, jdev) || !strings.Contains(out, "no ext2/ext3/ext4 superblock") {
		t.Errorf("mounting a device of junk: %v, want exit 32 naming %s and the reason:\n%s", err, jdev, out)
	}
	if info, _ := m.run("findmnt", "-n", dir); strings.TrimSpace(info) != "" {
		t.Errorf("a refused mount left %q", info)
	}
	m.waitGone("refusal")

	// The daemon's log goes to the journal, naming the device.
	logs := m.must("journalctl", "--no-pager", "-o", "cat", "-u", "safefsd@*")
	if !strings.Contains(logs, jdev) {
		t.Errorf("the journal has no safefsd line naming %s:\n%s", jdev, logs)
	}
}
