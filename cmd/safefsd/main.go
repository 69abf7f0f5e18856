// Command safefsd is the daemon that serves one ext2/ext3/ext4 filesystem
// through FUSE, parsing it in userspace so that a damaged or malicious
// image can never reach the kernel's ext4 code. It serves read-only.
//
// Usage:
//
//	safefsd                  (socket-activated: the connection on fd 3)
//	safefsd --listen PATH
//	safefsd --fdpass-fd C
//	safefsd --fuse-fd N (--device PATH | --device-fd M) [--norecovery]
//
// With --fdpass-fd, safefsd is mount.safe's peer on the control socket C
// (internal/fdpass): it asks for the source, checks the filesystem, answers
// with mount parameters or a reason for a person, receives /dev/fuse,
// answers INIT and says so, then serves. The second form serves
// descriptors handed over directly.
//
// The /dev/fuse descriptor N must already be mounted (or created and about
// to be attached) by a privileged helper, which also chose the mount
// options; safefsd answers the kernel's INIT on it, serves requests, and
// exits with status 0 when the filesystem is unmounted. It never mounts or
// unmounts anything itself. The device is opened read-only and never
// written: a journal that needs recovery is replayed in memory.
//
// In every mode safefsd confines itself (internal/sandbox: an unprivileged
// user, no capabilities, no_new_privs, a seccomp allow-list) once it holds
// its descriptors and before it reads a byte of the filesystem.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"runtime/debug"
	"unsafe"

	"golang.org/x/sys/unix"

	"safefs/internal/ext4"
	"safefs/internal/fdpass"
	"safefs/internal/fusefs"
	"safefs/internal/sandbox"
)

// Exit statuses: 1 when the filesystem cannot be served, 2 for a command
// line that makes no sense.
const (
	exitFailure = 1
	exitUsage   = 2
)

// version is set at build time (-ldflags -X main.version=...): the output
// of git describe, or the package version in a distribution's build.
var version = "devel"

func init() {
	// Set no_new_privs while the runtime still runs initialization on the
	// main thread, so that threads started later inherit it.
	if err := sandbox.SetNoNewPrivs(); err != nil {
		log.Fatalf("safefsd: setting no_new_privs: %v", err)
	}
}

// memoryLimit is the heap size at which the collector works harder rather
// than letting the heap double (GOGC=100): the daemon's live data is its
// bounded caches (32 MiB by default, ext4.DefaultBlockCacheBytes and
// DefaultInodeCacheBytes) and a 1 MiB buffer per /dev/fuse reader, so
// the limit keeps its resident memory under 64 MiB without collecting
// all the time. GOMEMLIMIT in the environment overrides it.
const memoryLimit = 56 << 20

func main() {
	log.SetFlags(0)
	log.SetPrefix("safefsd: ")
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fl := flag.NewFlagSet("safefsd", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fuseFD := fl.Int("fuse-fd", -1, "serve the mounted /dev/fuse descriptor `N`")
	listenPath := fl.String("listen", "", "serve mount.safe on a Unix socket at `PATH`, one child process per mount")
	fdpassFD := fl.Int("fdpass-fd", -1, "receive the device and /dev/fuse from mount.safe over the control socket on descriptor `C`")
	devPath := fl.String("device", "", "read the filesystem from the block device or image file `PATH`")
	devFD := fl.Int("device-fd", -1, "read the filesystem from the open descriptor `M` instead of --device")
	noRecovery := fl.Bool("norecovery", false, "do not replay a journal that needs recovery (in memory, by default): serve the state on the device, which may lack recent changes")
	showVersion := fl.Bool("version", false, "print the version and exit")
	debugFUSE := fl.Bool("debug", false, "log every FUSE request and reply")
	fl.Usage = func() {
		fmt.Fprintf(fl.Output(), `Usage: safefsd                 (started by safefsd.socket)
       safefsd --listen PATH
       safefsd --fdpass-fd C
       safefsd --fuse-fd N (--device PATH | --device-fd M) [--norecovery]

safefsd serves one ext2/ext3/ext4 filesystem read-only through FUSE, parsing
it in userspace. N is a /dev/fuse descriptor that a privileged helper has
already mounted; safefsd exits with status 0 when that mount is unmounted.

`)
		fl.PrintDefaults()
	}
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" || a == "--h" {
			// Asked-for help goes to stdout, with success.
			fl.SetOutput(os.Stdout)
			fl.Usage()
			return 0
		}
	}
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return exitUsage
	}
	if *showVersion {
		fmt.Fprintf(os.Stdout, "safefsd (safefs) %s\n", version)
		return 0
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "safefsd: "+format+"\n", a...)
		fmt.Fprintf(stderr, "Run safefsd --help for usage.\n")
		return exitUsage
	}
	if fl.NArg() > 0 {
		return usage("unexpected argument %q", fl.Arg(0))
	}
	if *listenPath != "" {
		if *fdpassFD >= 0 || *fuseFD >= 0 || *devPath != "" || *devFD >= 0 {
			return usage("--listen takes no other options")
		}
		return listen(*listenPath)
	}
	if *fdpassFD < 0 && *fuseFD < 0 && *devPath == "" && *devFD < 0 {
		if status, ok := serveActivated(*debugFUSE); ok {
			return status
		}
	}
	if *fdpassFD >= 0 {
		if *fuseFD >= 0 || *devPath != "" || *devFD >= 0 || *noRecovery {
			return usage("--fdpass-fd takes no other options: mount.safe sends them")
		}
		unix.CloseOnExec(*fdpassFD)
		conn, err := fdpass.FileConn(os.NewFile(uintptr(*fdpassFD), "control"))
		if err != nil {
			log.Printf("--fdpass-fd %d: %v", *fdpassFD, err)
			return exitFailure
		}
		return serveConn(conn, *debugFUSE)
	}
	switch {
	case *fuseFD < 0:
		return usage("--fuse-fd is required")
	case *fuseFD == 0:
		// go-fuse's /dev/fd/N convention cannot name descriptor 0.
		return usage("--fuse-fd 0 is not supported: pass /dev/fuse on descriptor 3 or above")
	case (*devPath == "") == (*devFD < 0):
		return usage("give exactly one of --device and --device-fd")
	}

	dev, name, err := openDevice(*devPath, *devFD)
	if err != nil {
		log.Print(err)
		return exitFailure
	}
	defer dev.Close()
	// The device and /dev/fuse are open: confine the daemon before it
	// reads a single byte of the filesystem.
	if _, err := sandbox.Confine(); err != nil {
		log.Printf("%s: %v", name, err)
		return exitFailure
	}
	o, err := openFilesystem(name, dev, nil, *noRecovery)
	if err != nil {
		log.Print(err)
		return exitFailure
	}
	for _, w := range o.warnings {
		log.Printf("%s: %s", name, w)
	}
	fsys, errs := o.fsys, o.errs
	err = fusefs.Serve(*fuseFD, fsys, fusefs.Options{
		Logf:   log.Printf,
		Errors: errs,
		Debug:  *debugFUSE,
	})
	if err != nil {
		log.Printf("serving %s on /dev/fuse descriptor %d: %v", name, *fuseFD, err)
		return exitFailure
	}
	return 0
}

// openDevice opens the filesystem's device read-only, by path or from an
// inherited descriptor, and returns it with a name for messages.
func openDevice(path string, fd int) (*os.File, string, error) {
	if path == "" {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return nil, "", fmt.Errorf("--device-fd %d: %v", fd, err)
		}
		unix.CloseOnExec(fd)
		name := fmt.Sprintf("device descriptor %d", fd)
		return os.NewFile(uintptr(fd), name), name, nil
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, "", fmt.Errorf("cannot open %s for reading: %v", path, err)
	}
	return os.NewFile(uintptr(fd), path), path, nil
}

// deviceSize returns the size in bytes of a regular file or block device,
// so that ext4 refuses a filesystem larger than its device instead of
// failing reads past the end later.
func deviceSize(f *os.File) (int64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, err
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return st.Size, nil
	case unix.S_IFBLK:
		var size uint64
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&size))); e != 0 {
			return 0, fmt.Errorf("cannot get the block device's size: %v", e)
		}
		if size > 1<<62 {
			return 0, fmt.Errorf("block device reports an impossible size of %d bytes", size)
		}
		return int64(size), nil
	}
	return 0, errors.New("not a block device or a regular file")
}

// explainOpen turns an ext4.Open error into a message for a person: what
// is wrong with the device and what to do about it.
func explainOpen(name string, err error) string {
	var fe *ext4.FormatError
	var feat *ext4.FeatureError
	var ioe *ext4.IOError
	switch {
	case errors.As(err, &feat):
		return fmt.Sprintf("%s: the filesystem uses the feature %q, which safefsd cannot serve (%s)", name, feat.Feature, feat.Reason)
	case errors.As(err, &fe):
		return fmt.Sprintf("%s: not a filesystem safefsd can serve: %v", name, err)
	case errors.As(err, &ioe):
		return fmt.Sprintf("%s: reading the superblock failed: %v", name, err)
	}
	return fmt.Sprintf("%s: %v", name, err)
}
