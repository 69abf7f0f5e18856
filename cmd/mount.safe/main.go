// Command mount.safe mounts an ext2/ext3/ext4 filesystem from an untrusted
// device or image without letting the kernel parse it. mount(8) runs it
// for `mount -t safe.ext4 SOURCE TARGET`; a person may run it by hand with
// the same arguments.
//
// mount.safe is the small privileged half of safefs. It opens only what the
// daemon asks for (the source, checked to be a block device or a regular
// file) and /dev/fuse, hands the descriptors to safefsd over a Unix socket,
// and creates the FUSE mount with the new mount API, attaching it only once
// the daemon has answered the kernel's INIT, so that any failure leaves
// nothing mounted. It never reads the filesystem itself.
//
// The daemon is reached at /run/safefsd.sock (socket activation); when no
// service is installed, mount.safe starts the safefsd found beside its own
// executable (then the installed one) as a child process.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Exit statuses, as mount(8) documents them.
const (
	exitOK       = 0
	exitUsage    = 1  // incorrect invocation or permissions
	exitSystem   = 2  // system error
	exitInternal = 4  // internal bug
	exitFailure  = 32 // mount failure
)

// version is set at build time (-ldflags -X main.version=...): the output
// of git describe, or the package version in a distribution's build.
var version = "devel"

// fsTypes maps the -t values mount(8) may pass to filesystem names.
var fsTypes = map[string]string{
	"safe.ext4": "ext4", "safe.ext3": "ext3", "safe.ext2": "ext2", "safe": "ext4",
}

// invocation is a parsed command line.
type invocation struct {
	source, target string
	fstype         string // ext2, ext3 or ext4
	sloppy         bool   // -s: ignore unknown options
	fake           bool   // -f: do everything but the mount itself
	verbose        bool   // -v
	opts           mountOptions
}

// usageError is a command line that cannot be run; it exits with status 1.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

const usageText = `Usage: mount.safe SOURCE TARGET [-sfnv] [-o OPTIONS] [-t safe.ext4|safe.ext3|safe.ext2]

Mounts the ext2/ext3/ext4 filesystem on SOURCE (a block device or an image
file) at TARGET without letting the kernel parse it: a sandboxed daemon,
safefsd, reads it and serves it through FUSE. The mount is always nosuid
and nodev, and read-only for now.

Options (-o, comma-separated):
  ro              mount read-only (the default until write support exists)
  rw              accepted, but the mount is made read-only with a warning
  norecovery      do not replay the journal of a filesystem that was not
                  cleanly unmounted (it is replayed in memory by default;
                  the device is never written) (alias: noload)
  noexec, exec, noatime, relatime, strictatime, nodiratime, nosymfollow
                  as for any mount
  defaults, auto, noauto, nofail, user, nouser, _netdev, x-*
                  accepted for fstab, no effect here

Flags:
  -s  ignore unknown options instead of failing
  -f  check everything but do not mount
  -n  accepted for mount(8) compatibility (there is no mtab to write)
  -v  say what is being done
  -t  the filesystem type mount(8) was given (safe.ext4 by default)
  --help, --version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	for _, a := range args {
		switch a {
		case "--help", "-h":
			fmt.Fprint(stdout, usageText)
			return exitOK
		case "--version", "-V":
			fmt.Fprintf(stdout, "mount.safe (safefs) %s\n", version)
			return exitOK
		}
	}
	inv, err := parseArgs(args)
	if err != nil {
		fmt.Fprintf(stderr, "mount.safe: %v\n", err)
		fmt.Fprintf(stderr, "Try 'mount.safe --help' for more information.\n")
		return exitUsage
	}
	if os.Geteuid() != 0 {
		fmt.Fprintf(stderr, "mount.safe: %s: only root can mount (run it with sudo, or add the mount to /etc/fstab)\n", inv.source)
		return exitUsage
	}
	logf := func(format string, args ...any) {
		if inv.verbose {
			fmt.Fprintf(stderr, "mount.safe: "+format+"\n", args...)
		}
	}
	warn := func(format string, args ...any) {
		fmt.Fprintf(stderr, "mount.safe: "+format+"\n", args...)
	}
	if err := mount(inv, logf, warn); err != nil {
		fmt.Fprintf(stderr, "mount.safe: %v\n", err)
		var me *mountError
		if errors.As(err, &me) {
			return me.status
		}
		return exitFailure
	}
	return exitOK
}

// parseArgs reads the argv mount(8) passes: SOURCE TARGET first, then
// flags in any order ("-o OPTS", "-oOPTS", "-t TYPE", "-sfnv" clustered).
func parseArgs(args []string) (*invocation, error) {
	inv := &invocation{fstype: "ext4"}
	var pos []string
	var optStrings []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			pos = append(pos, args[i+1:]...)
			i = len(args)
		case a == "-o" || a == "-t":
			if i+1 >= len(args) {
				return nil, usagef("%s needs an argument", a)
			}
			i++
			if a == "-o" {
				optStrings = append(optStrings, args[i])
			} else if err := inv.setType(args[i]); err != nil {
				return nil, err
			}
		case strings.HasPrefix(a, "-o"):
			optStrings = append(optStrings, a[2:])
		case strings.HasPrefix(a, "-t"):
			if err := inv.setType(a[2:]); err != nil {
				return nil, err
			}
		case strings.HasPrefix(a, "-") && len(a) > 1:
			for _, c := range a[1:] {
				switch c {
				case 's':
					inv.sloppy = true
				case 'f':
					inv.fake = true
				case 'n':
				case 'v':
					inv.verbose = true
				default:
					return nil, usagef("unknown flag -%c", c)
				}
			}
		default:
			pos = append(pos, a)
		}
	}
	if len(pos) != 2 {
		return nil, usagef("expected SOURCE and TARGET, got %d arguments", len(pos))
	}
	inv.source, inv.target = pos[0], pos[1]
	opts, err := parseOptions(strings.Join(optStrings, ","), inv.sloppy)
	if err != nil {
		return nil, err
	}
	inv.opts = opts
	return inv, nil
}

func (inv *invocation) setType(t string) error {
	fs, ok := fsTypes[t]
	if !ok {
		return usagef("unsupported filesystem type %q (mount.safe handles safe.ext4, safe.ext3 and safe.ext2)", t)
	}
	inv.fstype = fs
	return nil
}
