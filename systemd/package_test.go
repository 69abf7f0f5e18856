package systemd

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"safefs/internal/testimg"
	"safefs/internal/testmachine"
)

// TestDebianPackage builds the Debian package as `make deb` does (in a copy
// of the tree, from vendored modules, with no network and no writable
// HOME, then lintian), installs it with dpkg into a machine whose PID 1 is
// systemd, and checks what the package promises: the files in place, both
// binaries naming the package's version, safefsd.socket enabled and
// listening, `mount -t safe.ext4` of a loop device serving what the
// kernel's ext4 shows, a mount that outlives an upgrade of the package,
// and after `dpkg --purge` nothing left: no file, unit, enablement link,
// socket or state.
func TestDebianPackage(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("installing the package into a systemd machine needs root")
	}
	if testing.Short() {
		t.Skip("building the package takes a while")
	}
	for _, tool := range []string{"dpkg-buildpackage", "dh", "dpkg-parsechangelog", "lintian", "unshare"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (make deps installs what the package build needs)", tool)
		}
	}
	// The version the package and both binaries must carry, from the
	// changelog rather than from anything the build produced.
	out, err := exec.Command("dpkg-parsechangelog", "-l", "../debian/changelog", "-S", "Version").Output()
	if err != nil {
		t.Fatalf("dpkg-parsechangelog: %v", err)
	}
	version := strings.TrimSpace(string(out))
	out, err = exec.Command("dpkg", "--print-architecture").Output()
	if err != nil {
		t.Fatalf("dpkg --print-architecture: %v", err)
	}
	arch := strings.TrimSpace(string(out))

	dist := t.TempDir()
	start := time.Now()
	cmd := exec.Command("make", "-C", "..", "deb", "DISTDIR="+dist, "DEB_NONET=unshare -n")
	out, err = cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make deb (offline, under unshare -n): %v\n%s", err, out)
	}
	// lintian's warnings do not fail the build (its errors do); show them.
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "W: ") {
			t.Logf("lintian: %s", line)
		}
	}
	t.Logf("make deb took %v", time.Since(start).Round(time.Second))
	deb := fmt.Sprintf("safefs_%s_%s.deb", version, arch)
	if _, err := os.Stat(filepath.Join(dist, deb)); err != nil {
		t.Fatalf("make deb did not build %s: %v", deb, err)
	}

	m := testmachine.Boot(t, func(root string) {
		// This host may be a container image whose policy-rc.d forbids
		// starting services from maintainer scripts; a real machine has
		// none.
		os.Remove(filepath.Join(root, "usr/sbin/policy-rc.d"))
	})
	before := treeSet(t, m.Upper)
	if err := testimg.CopyFile(filepath.Join(dist, deb), filepath.Join(m.Root, "tmp", deb)); err != nil {
		t.Fatal(err)
	}
	m.Must("dpkg", "-i", "/tmp/"+deb)

	// What dpkg installed.
	if got := m.Must("dpkg-query", "-W", "-f=${Version} ${Status}", "safefs"); got != version+" install ok installed" {
		t.Errorf("dpkg-query: %q, want version %s installed", got, version)
	}
	files := strings.Fields(m.Must("dpkg", "-L", "safefs"))
	for _, want := range []string{
		"/usr/sbin/mount.safe", "/usr/libexec/safefs/safefsd",
		"/usr/lib/systemd/system/safefsd.socket", "/usr/lib/systemd/system/safefsd@.service",
		"/usr/share/man/man8/mount.safe.8.gz", "/usr/share/man/man8/safefsd.8.gz",
		"/usr/share/doc/safefs/copyright",
	} {
		if !contains(files, want) {
			t.Errorf("the package does not install %s; it has:\n%s", want, strings.Join(files, "\n"))
		}
	}
	for _, bin := range []string{"/usr/sbin/mount.safe", "/usr/libexec/safefs/safefsd"} {
		want := filepath.Base(bin) + " (safefs) " + version + "\n"
		if got, err := m.Run(bin, "--version"); err != nil || got != want {
			t.Errorf("%s --version: %v, %q, want %q", bin, err, got, want)
		}
	}
	if got := m.Must("systemctl", "cat", "safefsd@.service"); !strings.Contains(got, "\nExecStart=/usr/libexec/safefs/safefsd\n") {
		t.Errorf("safefsd@.service does not start /usr/libexec/safefs/safefsd:\n%s", got)
	}
	state := func(verb, unit string) string {
		out, _ := m.Run("systemctl", verb, unit)
		return strings.TrimSpace(out)
	}
	if e, a := state("is-enabled", "safefsd.socket"), state("is-active", "safefsd.socket"); e != "enabled" || a != "active" {
		t.Errorf("safefsd.socket is %s and %s, want enabled and active", e, a)
	}
	// The template is started by the socket only: no [Install], so
	// systemd calls it static, and no instance runs.
	if e := state("is-enabled", "safefsd@.service"); e != "static" {
		t.Errorf("safefsd@.service is %s, want static", e)
	}
	m.WaitGone("after installing")
	if st, err := os.Stat(m.HostPath("/run/safefsd.sock")); err != nil || st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
		t.Errorf("/run/safefsd.sock after installing: %v %v, want a socket with mode 0600", err, st)
	}

	// mount(8) finds the installed helper, the socket starts the
	// installed daemon, and the mount serves what the kernel shows.
	img := testimg.Build(t, mountSpec)
	want := testimg.KernelWalk(t, img)
	dev := testmachine.LoopDevice(t, img)
	const dir = "/mnt/safefs"
	m.Must("mkdir", "-p", dir)
	m.Must("mount", "-t", "safe.ext4", "-o", "ro", dev, dir)
	if f := strings.Fields(m.Must("findmnt", "-n", "-o", "SOURCE,FSTYPE", dir)); len(f) != 2 || f[0] != dev || f[1] != "fuseblk.ext4" {
		t.Errorf("findmnt %s: %q, want %s fuseblk.ext4", dir, f, dev)
	}
	pids := m.Daemons()
	if len(pids) != 1 {
		t.Fatalf("safefsd processes %v, want one", pids)
	}
	testimg.Compare(t, want, testimg.Walk(t, m.HostPath(dir)), testimg.CompareOpts{})

	// Upgrading (here: reinstalling) restarts safefsd.socket; the
	// daemon serving the mount is not touched.
	started := func() string {
		return strings.TrimSpace(m.Must("systemctl", "show", "-P", "ActiveEnterTimestampMonotonic", "safefsd.socket"))
	}
	first := started()
	m.Must("dpkg", "-i", "/tmp/"+deb)
	if a, again := state("is-active", "safefsd.socket"), started(); a != "active" || again == first {
		t.Errorf("safefsd.socket after an upgrade: %s, started at %s and %s, want restarted and active", a, first, again)
	}
	if got := m.Daemons(); len(got) != 1 || got[0] != pids[0] {
		t.Errorf("safefsd processes %v after an upgrade, want the mount's %v still serving", got, pids)
	}
	testimg.Compare(t, want, testimg.Walk(t, m.HostPath(dir)), testimg.CompareOpts{})
	m.Must("umount", dir)
	m.WaitGone("after umount")
	m.Must("rmdir", dir)

	m.Must("dpkg", "--purge", "safefs")
	if out, err := m.Run("dpkg-query", "-W", "-f=${Status}", "safefs"); err == nil && !strings.Contains(out, "not-installed") {
		t.Errorf("after dpkg --purge, safefs is %q", out)
	}
	for _, f := range append(files, "/run/safefsd.sock") {
		if _, err := os.Lstat(m.HostPath(f)); err == nil && !contains(sharedDirs, f) {
			t.Errorf("dpkg --purge left %s", f)
		}
	}
	// (systemctl lists nothing, and says so with exit status 1.)
	if units, _ := m.Run("systemctl", "list-unit-files", "--no-legend", "safefsd*"); strings.TrimSpace(units) != "" {
		t.Errorf("unit files left after purge:\n%s", units)
	}
	if units, _ := m.Run("systemctl", "list-units", "--all", "--no-legend", "safefsd*"); strings.TrimSpace(units) != "" {
		t.Errorf("units still loaded after purge:\n%s", units)
	}
	// Everything the machine created under / since before the install,
	// but for dpkg's own records and logs and man-db's index: nothing
	// may remain (enablement links, deb-systemd-helper state, conffiles,
	// directories).
	for _, p := range newPaths(t, m.Upper, before) {
		if strings.Contains(p, "safefs") || !(strings.HasPrefix(p, "var/lib/dpkg/") || strings.HasPrefix(p, "var/log/") || strings.HasPrefix(p, "var/cache/man/")) {
			t.Errorf("dpkg --purge left /%s", p)
		}
	}
}

// mountSpec is the image both machine tests mount: the same spec, so one
// test run builds it once.
var mountSpec = testimg.Spec{Name: "systemd", MkfsArgs: []string{"-t", "ext4"}, SizeMB: 64, Tree: testimg.TreeFull, NeedsRoot: true, Htree: true}

// sharedDirs are directories the package installs into but other
// packages own too; only what is below them is the package's.
var sharedDirs = []string{"/.", "/usr", "/usr/sbin", "/usr/lib", "/usr/lib/systemd", "/usr/lib/systemd/system",
	"/usr/libexec", "/usr/share", "/usr/share/doc", "/usr/share/man", "/usr/share/man/man8"}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// treeSet lists every path below dir, relative to it.
func treeSet(t *testing.T, dir string) map[string]bool {
	t.Helper()
	set := map[string]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		set[rel] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// newPaths lists the paths below the overlay's upper directory that were
// not there before and that the host's / does not have either: what the
// machine created, as opposed to the host's directories copied up when
// something was written inside them. Whiteouts (a host file removed in
// the machine) count too.
func newPaths(t *testing.T, upper string, before map[string]bool) []string {
	t.Helper()
	var paths []string
	for p := range treeSet(t, upper) {
		if before[p] || p == "." {
			continue
		}
		st, err := os.Lstat(filepath.Join(upper, p))
		if err != nil {
			continue
		}
		if st.IsDir() {
			if hs, err := os.Lstat("/" + p); err == nil && hs.IsDir() {
				continue
			}
		}
		paths = append(paths, p)
	}
	return paths
}

// TestReproducibleBinaries builds both binaries with make in two copies of
// the tree at different paths and checks they are identical byte for
// byte: no path, time or VCS state gets into them. The Go build cache is
// shared, so this checks the link and what feeds it; make
// reproducible-check does the same with cold caches, through the package.
func TestReproducibleBinaries(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries twice")
	}
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	if _, err := os.Stat("../.git"); err != nil {
		t.Skip("not a git checkout: no list of the tree's files")
	}
	files, err := exec.Command("git", "-C", "..", "ls-files", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	tmp := t.TempDir()
	dirs := []string{filepath.Join(tmp, "a"), filepath.Join(tmp, "another", "copy")}
	for _, dir := range dirs {
		for _, f := range strings.Split(strings.TrimSpace(string(files)), "\n") {
			if _, err := os.Stat(filepath.Join("..", f)); err != nil {
				continue // deleted but not yet committed
			}
			os.MkdirAll(filepath.Join(dir, filepath.Dir(f)), 0o755)
			if err := testimg.CopyFile(filepath.Join("..", f), filepath.Join(dir, f)); err != nil {
				t.Fatal(err)
			}
		}
		if out, err := exec.Command("make", "-C", dir, "build", "VERSION=1.2.3").CombinedOutput(); err != nil {
			t.Fatalf("make build in %s: %v\n%s", dir, err, out)
		}
	}
	for _, bin := range []string{"mount.safe", "safefsd"} {
		a, err1 := os.ReadFile(filepath.Join(dirs[0], "bin", bin))
		b, err2 := os.ReadFile(filepath.Join(dirs[1], "bin", bin))
		if err1 != nil || err2 != nil {
			t.Fatalf("reading the builds: %v, %v", err1, err2)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("bin/%s differs between builds in %s and %s", bin, dirs[0], dirs[1])
		}
	}
}
