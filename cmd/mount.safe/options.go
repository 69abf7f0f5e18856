package main

import (
	"strings"

	"golang.org/x/sys/unix"
)

// mountOptions is what -o asked for.
type mountOptions struct {
	readWrite  bool     // rw was asked for (and will be refused with a warning)
	readOnly   bool     // ro was asked for
	noRecovery bool     // norecovery / noload: passed to the daemon
	attrs      uint64   // MOUNT_ATTR_* for the mount
	atimeSet   bool     // an atime mode was given
	daemon     []string // options passed to the daemon in the Hello
	ignored    []string // accepted fstab options with no effect
}

// VFS options that map to mount attributes. The atime modes are mutually
// exclusive values of one field; the rest are flags.
var (
	attrFlags = map[string]uint64{
		"noexec":      unix.MOUNT_ATTR_NOEXEC,
		"nodiratime":  unix.MOUNT_ATTR_NODIRATIME,
		"nosymfollow": unix.MOUNT_ATTR_NOSYMFOLLOW,
		"nosuid":      0, // always set
		"nodev":       0, // always set
		"exec":        0,
		"diratime":    0,
		"async":       0,
	}
	atimeModes = map[string]uint64{
		"noatime":     unix.MOUNT_ATTR_NOATIME,
		"relatime":    unix.MOUNT_ATTR_RELATIME,
		"strictatime": unix.MOUNT_ATTR_STRICTATIME,
		"atime":       unix.MOUNT_ATTR_RELATIME,
	}
	// Options mount(8) and fstab use that concern mount(8) itself.
	userspaceOptions = map[string]bool{
		"defaults": true, "auto": true, "noauto": true, "nofail": true,
		"user": true, "nouser": true, "users": true, "owner": true, "group": true,
		"_netdev": true,
	}
)

// parseOptions checks a comma-separated -o string. Unknown options are an
// error unless sloppy (-s), as for the kernel's own filesystems.
func parseOptions(s string, sloppy bool) (mountOptions, error) {
	o := mountOptions{attrs: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_RDONLY}
	for _, opt := range strings.Split(s, ",") {
		switch {
		case opt == "":
		case opt == "rw":
			o.readWrite, o.readOnly = true, false
		case opt == "ro":
			o.readOnly, o.readWrite = true, false
		case opt == "norecovery" || opt == "noload":
			o.noRecovery = true
			o.daemon = append(o.daemon, "norecovery")
		case opt == "suid" || opt == "dev":
			// Honouring these would let a hostile image carry setuid
			// binaries or device nodes; safefs never does.
			o.ignored = append(o.ignored, opt)
		case userspaceOptions[opt] || strings.HasPrefix(opt, "x-") || strings.HasPrefix(opt, "comment="):
			o.ignored = append(o.ignored, opt)
		default:
			if f, ok := attrFlags[opt]; ok {
				o.attrs |= f
				continue
			}
			if m, ok := atimeModes[opt]; ok {
				if o.atimeSet {
					return o, usagef("more than one atime option (%s)", opt)
				}
				o.atimeSet = true
				o.attrs |= m
				continue
			}
			if !sloppy {
				return o, usagef("unknown mount option %q", opt)
			}
			o.ignored = append(o.ignored, opt)
		}
	}
	return o, nil
}
