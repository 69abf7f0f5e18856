// Package testmachine is test support: it boots a real systemd as PID 1 in
// its own PID and mount namespace, on an overlay of the host's root, so
// that tests can install safefs into it (with make install or dpkg), start
// its units and mount through mount(8) as on a real machine, while the host
// stays untouched: every file the machine writes lands in the overlay's
// upper directory, which disappears with the machine.
package testmachine

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
)

// Machine is a systemd running as PID 1 over an overlay of the host's /.
type Machine struct {
	// Root is the machine's /, as seen from the host. Files written
	// there from the host are seen inside; /run and /tmp are tmpfs.
	Root string
	// Upper is the overlay's upper directory: everything the machine
	// (or the host through Root) created or changed below /, except
	// under /run, /tmp, /proc, /sys and /dev.
	Upper string

	t    testing.TB
	base string    // tmpfs holding the overlay
	cmd  *exec.Cmd // unshare, whose child is systemd
	pid  int       // systemd, in the host's PID namespace
	logs bytes.Buffer
}

// Boot starts systemd as PID 1 over an overlay of the host's root (the
// recipe in the project's test notes) and waits until it runs; the
// machine is powered off when the test ends. It boots basic.target only:
// nothing the host happens to have installed (databases, display
// managers) is started. prepare, if not nil, runs before systemd starts,
// with the machine's root: a place to install units that systemd should
// find at boot. Boot skips the test when not root or when systemd,
// util-linux or /dev/fuse is missing.
func Boot(t testing.TB, prepare func(root string)) *Machine {
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
	m := &Machine{t: t, base: t.TempDir()}
	m.Root = filepath.Join(m.base, "root")
	m.Upper = filepath.Join(m.base, "u")
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
	mnt("overlay", m.Root, "overlay", "lowerdir=/,upperdir="+m.Upper+",workdir="+m.base+"/w", 0)
	mnt("proc", m.Root+"/proc", "proc", "", 0)
	mnt("/sys", m.Root+"/sys", "", "", unix.MS_BIND|unix.MS_REC)
	mnt("/dev", m.Root+"/dev", "", "", unix.MS_BIND|unix.MS_REC)
	mnt("tmpfs", m.Root+"/run", "tmpfs", "mode=0755", 0)
	mnt("tmpfs", m.Root+"/tmp", "tmpfs", "mode=1777", 0)

	if prepare != nil {
		prepare(m.Root)
	}

	m.cmd = exec.Command("unshare", "--pid", "--fork", "--mount", "--uts", "--propagation", "private",
		"chroot", m.Root, "/usr/bin/env", "container=other", "/lib/systemd/systemd", "--unit=basic.target")
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
		out, _ := m.Run("systemctl", "is-system-running")
		state := strings.TrimSpace(out)
		if state == "running" || state == "degraded" {
			break
		}
		if time.Now().After(deadline) {
			failed, _ := m.Run("systemctl", "--failed", "--no-legend")
			t.Fatalf("systemd is %q after 30 s; failed units:\n%s\n%s", state, failed, m.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return m
}

// Run runs a command inside the machine and returns its combined output.
// A command that has not finished after 60 s is killed.
func (m *Machine) Run(args ...string) (string, error) {
	full := append([]string{"-t", strconv.Itoa(m.pid), "-a", "chroot", m.Root}, args...)
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

// Must runs a command inside the machine and fails the test if it fails.
func (m *Machine) Must(args ...string) string {
	m.t.Helper()
	out, err := m.Run(args...)
	if err != nil {
		m.t.Fatalf("in the machine, %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// shutdown powers the machine off and removes its mounts.
func (m *Machine) shutdown() {
	if m.cmd != nil && m.cmd.Process != nil {
		if m.pid != 0 {
			m.Run("systemctl", "poweroff")
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

// HostPath is the path on the host of path inside the machine, through
// systemd's root: mounts made inside the machine's mount namespace (and
// its /run and /tmp) are visible there.
func (m *Machine) HostPath(path string) string {
	return fmt.Sprintf("/proc/%d/root%s", m.pid, path)
}

// Daemons returns the host PIDs of the safefsd processes running inside
// the machine (started by its systemd from the installed path), zombies
// excepted.
func (m *Machine) Daemons() []int {
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

// WaitGone waits until no safefsd@ instance is loaded and no daemon runs
// in the machine, and fails the test (naming what) if that takes over 15 s.
func (m *Machine) WaitGone(what string) {
	m.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		units, _ := m.Run("systemctl", "list-units", "--all", "--no-legend", "--plain", "safefsd@*")
		if strings.TrimSpace(units) == "" && len(m.Daemons()) == 0 {
			return
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("%s: safefsd still there 15 s later: units %q, daemons %v", what, units, m.Daemons())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// LoopDevice attaches img to a read-only loop device, detached when the
// test ends, and returns its path. The host's loop devices are the
// machine's too.
func LoopDevice(t testing.TB, img string) string {
	t.Helper()
	out, err := exec.Command("losetup", "--find", "--show", "--read-only", img).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup %s: %v\n%s", img, err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}
