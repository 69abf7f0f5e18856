package main

import (
	"bytes"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseArgs(t *testing.T) {
	cases := []struct {
		args    []string
		want    string // "" for an error
		errPart string
	}{
		{[]string{"/dev/sdb1", "/mnt"}, "ext4 /dev/sdb1 /mnt", ""},
		{[]string{"/dev/sdb1", "/mnt", "-o", "ro,noatime", "-t", "safe.ext3"}, "ext3 /dev/sdb1 /mnt", ""},
		{[]string{"img", "dir", "-sfnv", "-oro", "-tsafe.ext2"}, "ext2 img dir", ""},
		{[]string{"img"}, "", "expected SOURCE and TARGET"},
		{[]string{"img", "dir", "extra"}, "", "expected SOURCE and TARGET"},
		{[]string{"img", "dir", "-t", "ext4"}, "", "unsupported filesystem type"},
		{[]string{"img", "dir", "-o"}, "", "needs an argument"},
		{[]string{"img", "dir", "-x"}, "", "unknown flag"},
		{[]string{"img", "dir", "-o", "data=journal"}, "", "unknown mount option"},
		{[]string{"img", "dir", "-s", "-o", "data=journal"}, "ext4 img dir", ""},
		{[]string{"img", "dir", "-o", "noatime,relatime"}, "", "more than one atime"},
	}
	for _, c := range cases {
		inv, err := parseArgs(c.args)
		if c.want == "" {
			if err == nil || !strings.Contains(err.Error(), c.errPart) {
				t.Errorf("%q: got %v, want an error containing %q", c.args, err, c.errPart)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", c.args, err)
			continue
		}
		if got := inv.fstype + " " + inv.source + " " + inv.target; got != c.want {
			t.Errorf("%q: got %q, want %q", c.args, got, c.want)
		}
	}
}

func TestOptions(t *testing.T) {
	o, err := parseOptions("rw,noexec,noatime,norecovery,suid,dev,defaults,nofail,x-systemd.automount", false)
	if err != nil {
		t.Fatal(err)
	}
	always := uint64(unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_RDONLY)
	if o.attrs&always != always {
		t.Errorf("nosuid,nodev,ro not forced: attrs %#x", o.attrs)
	}
	if o.attrs&unix.MOUNT_ATTR_NOEXEC == 0 || o.attrs&unix.MOUNT_ATTR_NOATIME == 0 {
		t.Errorf("noexec/noatime lost: attrs %#x", o.attrs)
	}
	if ro, _ := parseOptions("rw,ro", false); !ro.readOnly || ro.readWrite {
		t.Errorf("the last of rw and ro must win: %+v", ro)
	}
	if !o.readWrite || !o.noRecovery || len(o.daemon) != 1 || o.daemon[0] != "norecovery" {
		t.Errorf("rw/norecovery not recorded: %+v", o)
	}
}

func TestHelpVersionUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	if st := run([]string{"--help"}, &out, &errOut); st != exitOK || !strings.Contains(out.String(), "Usage: mount.safe") {
		t.Errorf("--help: status %d, %q", st, out.String())
	}
	out.Reset()
	if st := run([]string{"--version"}, &out, &errOut); st != exitOK || !strings.HasPrefix(out.String(), "mount.safe (safefs) ") {
		t.Errorf("--version: status %d, %q", st, out.String())
	}
	errOut.Reset()
	if st := run([]string{"only-one"}, &out, &errOut); st != exitUsage || !strings.Contains(errOut.String(), "expected SOURCE and TARGET") {
		t.Errorf("bad usage: status %d, %q", st, errOut.String())
	}
}
