package fusefs_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"safefs/internal/testimg"
)

// TestDaemon runs the safefsd binary the way mount.safe will: the test
// creates the mount, hands the /dev/fuse descriptor to the daemon
// (descriptor 3), walks the mount, unmounts, and expects the daemon to
// exit with status 0 and to have printed nothing. The walk must match
// the kernel's, and the daemon's thread count stays bounded.
func TestDaemon(t *testing.T) {
	requireFUSE(t)
	testimg.RequireKernelMount(t)
	daemon := daemonBinary(t)
	img := testimg.Build(t, testimg.SpecNamed(t, "ext4-default"))
	want := testimg.KernelWalk(t, img)

	m := mountImage(t, img, mountConfig{daemon: daemon})
	pid := m.cmd.Process.Pid
	var maxThreads atomic.Int32
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task"); err == nil && int32(len(ents)) > maxThreads.Load() {
				maxThreads.Store(int32(len(ents)))
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	got := testimg.Walk(t, m.Dir)
	close(stop)
	<-sampled
	m.Unmount(t)

	testimg.Compare(t, want, got, testimg.CompareOpts{})
	if err := m.Wait(); err != nil {
		t.Errorf("safefsd exited with %v, want status 0; stderr:\n%s", err, m.stderr.String())
	} else if m.stderr.Len() > 0 {
		t.Errorf("safefsd printed:\n%s", m.stderr.String())
	}
	t.Logf("safefsd ran with at most %d threads", maxThreads.Load())
	if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
		t.Errorf("safefsd (pid %d) still exists after exiting", pid)
	}
}

// TestDaemonErrors checks that safefsd refuses what it cannot serve with
// a message naming the device and a non-zero status, before it touches
// the FUSE descriptor, and that --help and --version work.
func TestDaemonErrors(t *testing.T) {
	daemon := daemonBinary(t)
	notFS := filepath.Join(t.TempDir(), "zeros")
	if err := os.WriteFile(notFS, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args   []string
		status int
		say    string
	}{
		{[]string{"--help"}, 0, "Usage: safefsd"},
		{[]string{"--version"}, 0, "safefsd"},
		{[]string{"--device", notFS}, 2, "--fuse-fd is required"},
		{[]string{"--fuse-fd", "3"}, 2, "--device"},
		{[]string{"--fuse-fd", "3", "--device", notFS}, 1, notFS + ": not a filesystem safefsd can serve"},
		{[]string{"--fuse-fd", "3", "--device", notFS + ".missing"}, 1, notFS + ".missing"},
		{[]string{"--fuse-fd", "3", "--device", t.TempDir()}, 1, "not a block device or a regular file"},
	} {
		out, err := exec.Command(daemon, c.args...).CombinedOutput()
		status := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			status = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if status != c.status || !strings.Contains(string(out), c.say) {
			t.Errorf("safefsd %s: status %d, output %q; want status %d and %q", strings.Join(c.args, " "), status, out, c.status, c.say)
		}
	}
}
