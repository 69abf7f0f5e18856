// Package systemd holds safefs's systemd units; this test installs them
// with `make install` and checks them with systemd-analyze.
package systemd

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestInstallAndUnits runs make install into a DESTDIR, checks every file
// landed where mount(8) and systemd look and that both binaries name the
// version git describe gives, verifies both units, rates the
// service's exposure (at most 1.0), and checks make uninstall removes it
// all.
func TestInstallAndUnits(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed")
	}
	dest := t.TempDir()
	make := func(target string) {
		cmd := exec.Command("make", "-C", "..", target, "DESTDIR="+dest)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make %s: %v\n%s", target, err, out)
		}
	}
	make("install")
	files := []string{
		"usr/sbin/mount.safe",
		"usr/libexec/safefs/safefsd",
		"usr/lib/systemd/system/safefsd.socket",
		"usr/lib/systemd/system/safefsd@.service",
		"usr/share/man/man8/mount.safe.8",
		"usr/share/man/man8/safefsd.8",
	}
	for _, f := range files {
		if _, err := os.Stat(filepath.Join(dest, f)); err != nil {
			t.Errorf("make install: %v", err)
		}
	}
	// Both binaries name the version make gave them: git describe's.
	version := "devel"
	if out, err := exec.Command("git", "-C", "..", "describe", "--tags", "--always", "--dirty").Output(); err == nil {
		version = strings.TrimSpace(string(out))
	}
	for _, bin := range []string{"usr/sbin/mount.safe", "usr/libexec/safefs/safefsd"} {
		out, err := exec.Command(filepath.Join(dest, bin), "--version").CombinedOutput()
		want := filepath.Base(bin) + " (safefs) " + version + "\n"
		if err != nil || string(out) != want {
			t.Errorf("%s --version: %v, %q, want %q", bin, err, out, want)
		}
	}
	svc := filepath.Join(dest, "usr/lib/systemd/system/safefsd@.service")
	data, _ := os.ReadFile(svc)
	if !strings.Contains(string(data), "ExecStart=/usr/libexec/safefs/safefsd\n") {
		t.Errorf("installed unit does not start the installed daemon:\n%s", data)
	}
	// verify checks that ExecStart exists on this system; point it at the
	// daemon in DESTDIR (in a copy) so the installed units verify as they
	// are otherwise.
	vdir := t.TempDir()
	sock, _ := os.ReadFile(filepath.Join(dest, "usr/lib/systemd/system/safefsd.socket"))
	os.WriteFile(filepath.Join(vdir, "safefsd.socket"), sock, 0o644)
	local := strings.ReplaceAll(string(data), "ExecStart=/usr/libexec/safefs/safefsd", "ExecStart="+filepath.Join(dest, "usr/libexec/safefs/safefsd"))
	os.WriteFile(filepath.Join(vdir, "safefsd@.service"), []byte(local), 0o644)
	out, err := exec.Command("systemd-analyze", "verify", "--man=no",
		filepath.Join(vdir, "safefsd.socket"), filepath.Join(vdir, "safefsd@.service")).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err = exec.Command("systemd-analyze", "security", "--offline=true", "--root="+dest, "safefsd@x.service").CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	if score, _ := strconv.ParseFloat(string(m[1]), 64); score > 1.0 {
		t.Errorf("exposure %.1f, want at most 1.0:\n%s", score, out)
	} else {
		t.Logf("exposure level %.1f", score)
	}
	make("uninstall")
	for _, f := range files {
		if _, err := os.Stat(filepath.Join(dest, f)); err == nil {
			t.Errorf("make uninstall left %s", f)
		}
	}
}
