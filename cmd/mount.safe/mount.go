package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"safefs/internal/fdpass"
	"safefs/internal/fusemount"
	"safefs/internal/iomap/abi"
)

// socketPath is where the socket-activated service listens. The
// SAFEFS_SOCKET environment variable names another (a service run with
// safefsd --listen elsewhere, or a test).
var socketPath = func() string {
	if p := os.Getenv("SAFEFS_SOCKET"); p != "" {
		return p
	}
	return "/run/safefsd.sock"
}()

// daemonDir is where `make install` puts safefsd (set at build time with
// -ldflags -X main.daemonDir=...).
var daemonDir = "/usr/libexec/safefs"

// daemonPaths are where mount.safe looks for safefsd when no service is
// listening, after the directory of its own executable.
var daemonPaths = []string{filepath.Join(daemonDir, "safefsd"), "/usr/libexec/safefs/safefsd", "/usr/lib/safefs/safefsd"}

// mountError is a failure with the exit status it maps to.
type mountError struct {
	status int
	msg    string
}

func (e *mountError) Error() string { return e.msg }

func failf(status int, format string, args ...any) error {
	return &mountError{status: status, msg: fmt.Sprintf(format, args...)}
}

// mount runs the whole exchange with the daemon and creates the mount.
// Until the final move_mount nothing is attached: returning an error
// closes the filesystem context, which ends the FUSE connection and so the
// daemon's work.
func mount(inv *invocation, logf, warn func(string, ...any)) error {
	if st, err := os.Stat(inv.target); err != nil {
		return failf(exitFailure, "%s: mount point: %v", inv.target, errors.Unwrap(err))
	} else if !st.IsDir() {
		return failf(exitFailure, "%s: mount point is not a directory", inv.target)
	}
	if !inv.opts.readOnly {
		// As mount(8) does for write-protected media: say so, and go on.
		warn("%s: write support is not available yet; mounting read-only", inv.source)
	}
	for _, o := range inv.opts.ignored {
		logf("option %s has no effect here", o)
	}
	conn, daemon, err := connectDaemon(logf)
	if err != nil {
		return err
	}
	err = system.exchange(conn, inv, logf, warn)
	// Closed first, so that a daemon whose mount failed sees the end of
	// the exchange and exits before finish has to kill it.
	conn.Close()
	if daemon != nil {
		daemon.finish(err == nil)
	}
	return err
}

// host is what mount.safe's side of the exchange does to the system
// besides talking to the daemon: the steps that a test of the protocol
// code replaces, since they open devices and create mounts.
type host struct {
	// openSource opens the mount's source read-only for the daemon and
	// reports whether it is a block device.
	openSource func(path string) (*os.File, bool, error)
	// openFuse opens /dev/fuse.
	openFuse func() (*os.File, error)
	// create grants what the connection on fuse may use and creates the
	// FUSE superblock, detached: the kernel sends INIT on fuse. It
	// returns the filesystem context's descriptor.
	create func(src string, fuse *os.File, block bool, p *fdpass.MountParams, logf func(string, ...any)) (int, error)
	// attach attaches the superblock at target.
	attach func(fsfd int, target string, attrs int) error
	// mounted does what follows a mount (the read-ahead).
	mounted func(target string, p *fdpass.MountParams, logf func(string, ...any))
	// unmount takes an attached mount away again.
	unmount func(target string)
	// closeFD closes a filesystem context.
	closeFD func(fd int)
}

// system is mount.safe's real host.
var system = host{
	openSource: openSource,
	openFuse: func() (*os.File, error) {
		return os.OpenFile("/dev/fuse", os.O_RDWR|syscall.O_CLOEXEC, 0)
	},
	create: func(src string, fuse *os.File, block bool, p *fdpass.MountParams, logf func(string, ...any)) (int, error) {
		grantIomap(fuse, logf)
		return createSuperblock(src, int(fuse.Fd()), block, p)
	},
	attach: fusemount.Attach,
	mounted: func(target string, p *fdpass.MountParams, logf func(string, ...any)) {
		raiseReadAhead(target, p.MaxRead, logf)
	},
	unmount: func(target string) {
		if err := unix.Unmount(target, 0); err != nil {
			unix.Unmount(target, unix.MNT_DETACH)
		}
	},
	closeFD: func(fd int) { unix.Close(fd) },
}

// exchange runs mount.safe's side of the exchange with the daemon on conn
// and creates the mount. The daemon is not trusted: it only ever names
// the role of a file it wants, never a path, and nothing is attached
// before it has answered INIT.
func (h host) exchange(conn *fdpass.Conn, inv *invocation, logf, warn func(string, ...any)) error {
	src := inv.source
	if err := conn.Send(&fdpass.Hello{Version: fdpass.Version, FSType: inv.fstype, Source: src, Target: inv.target, Options: inv.opts.daemon}); err != nil {
		return daemonFailed(src, err)
	}
	var srcFile *os.File
	var block bool
	defer func() {
		if srcFile != nil {
			srcFile.Close()
		}
	}()
	var params *fdpass.MountParams
	for params == nil {
		m, files, err := conn.Recv()
		if err != nil {
			return daemonFailed(src, err)
		}
		for _, f := range files {
			// No message from the daemon carries a descriptor.
			f.Close()
		}
		switch m := m.(type) {
		case *fdpass.FileRequest:
			if m.Write {
				msg := "the daemon asked for write access, which a read-only mount never needs"
				conn.Send(&fdpass.FileReply{ID: m.ID, Error: msg})
				return failf(exitFailure, "%s: %s", src, msg)
			}
			if m.Direct {
				// A second descriptor of the source for bulk reads;
				// without it the daemon reads everything buffered.
				f, err := reopenDirect(srcFile, block)
				if err != nil {
					logf("%s: no O_DIRECT descriptor for the daemon: %v", src, err)
					if err := conn.Send(&fdpass.FileReply{ID: m.ID, Error: err.Error()}); err != nil {
						return daemonFailed(src, err)
					}
					continue
				}
				err = conn.Send(&fdpass.FileReply{ID: m.ID, Block: true}, f)
				f.Close()
				if err != nil {
					return daemonFailed(src, err)
				}
				continue
			}
			if srcFile != nil {
				return daemonFailed(src, errors.New("it asked for the source twice"))
			}
			f, isBlock, err := h.openSource(src)
			if err != nil {
				conn.Send(&fdpass.FileReply{ID: m.ID, Error: err.Error()})
				return failf(exitFailure, "%s: %v", src, err)
			}
			logf("%s: opened for the daemon (block device: %v)", src, isBlock)
			srcFile, block = f, isBlock
			if err := conn.Send(&fdpass.FileReply{ID: m.ID, Block: isBlock}, f); err != nil {
				return daemonFailed(src, err)
			}
		case *fdpass.Error:
			return failf(exitFailure, "%s", m.Message)
		case *fdpass.MountParams:
			params = m
		default:
			return daemonFailed(src, fmt.Errorf("unexpected %s", m.Type()))
		}
	}
	if srcFile == nil {
		return daemonFailed(src, errors.New("it accepted the filesystem without reading it"))
	}
	for _, w := range params.Warnings {
		warn("%s: %s", src, w)
	}
	if inv.fake {
		logf("-f given: not mounting")
		conn.Send(&fdpass.Goodbye{Reason: "fake mount"})
		return nil
	}

	fuse, err := h.openFuse()
	if err != nil {
		return failf(exitSystem, "%s: opening /dev/fuse: %v (is the fuse module loaded?)", src, errors.Unwrap(err))
	}
	defer fuse.Close()
	fsfd, err := h.create(src, fuse, block, params, logf)
	if err != nil {
		conn.Send(&fdpass.Error{Message: err.Error()})
		return err
	}
	defer h.closeFD(fsfd)
	if err := conn.Send(&fdpass.FuseDevice{}, fuse); err != nil {
		return daemonFailed(src, err)
	}
	// The daemon holds the connection now; this descriptor would only
	// keep it alive if the daemon died. Then every request on the mount
	// (our own stat of it, below, included) would wait for an answer
	// forever, where with the daemon's the last descriptor gone they fail
	// at once (ENOTCONN).
	fuse.Close()
	if _, _, err := conn.Expect(fdpass.TReady); err != nil {
		var pe *fdpass.PeerError
		if errors.As(err, &pe) {
			return failf(exitFailure, "%s", pe.Message)
		}
		return daemonFailed(src, err)
	}
	logf("%s: the daemon answered INIT; attaching at %s", src, inv.target)
	if err := h.attach(fsfd, inv.target, int(inv.opts.attrs)); err != nil {
		return failf(exitFailure, "%s: %v", src, err)
	}
	h.mounted(inv.target, params, logf)
	if err := conn.Send(&fdpass.Goodbye{Reason: "mounted"}); err != nil {
		// The daemon died after answering INIT: the mount could only
		// answer ENOTCONN. Take it away again.
		h.unmount(inv.target)
		return daemonFailed(src, err)
	}
	return nil
}

func daemonFailed(src string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return failf(exitFailure, "%s: the safefsd daemon stopped before the mount was ready; "+
			"its log is in the journal (journalctl -u 'safefsd@*') or, when mount.safe started it, in the kernel log (dmesg)", src)
	}
	return failf(exitFailure, "%s: the safefsd daemon failed: %v", src, err)
}

// grantIomap allows the connection on fuse to use FUSE iomap, so that the
// kernel can do the data I/O of a block device mount itself once the
// daemon hands it mappings. Only a task with CAP_SYS_RAWIO may grant it,
// and only before the descriptor goes to the unprivileged daemon. A kernel
// without iomap answers ENOTTY: the mount then serves data through the
// daemon, as FUSE always has.
func grantIomap(fuse *os.File, logf func(string, ...any)) {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, fuse.Fd(), abi.DevIocAddIomap, 0)
	switch e {
	case 0:
		logf("FUSE iomap granted to the connection")
	case unix.ENOTTY, unix.EINVAL:
		logf("this kernel has no FUSE iomap: data will go through the daemon")
	default:
		logf("granting FUSE iomap: %v; data will go through the daemon", e)
	}
}

// reopenDirect opens the block device src again with O_DIRECT, through
// /proc/self/fd so that it is the very device already opened (the path
// could name another by now).
func reopenDirect(src *os.File, block bool) (*os.File, error) {
	if src == nil || !block {
		return nil, errors.New("only a block device already opened for the daemon can be opened for direct I/O")
	}
	path := fmt.Sprintf("/proc/self/fd/%d", src.Fd())
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("opening it with O_DIRECT: %w", err)
	}
	return os.NewFile(uintptr(fd), src.Name()), nil
}

// openSource opens the mount source for the daemon: only a block device or
// a regular file, never following the daemon's choice of path (it names a
// role; the path is the one the user gave). An image file is locked so
// that two safefs mounts of it cannot coexist.
func openSource(path string) (*os.File, bool, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_CLOEXEC|syscall.O_NOCTTY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, false, errors.Unwrap(err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, false, err
	}
	switch {
	case st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0:
		// A block device already mounted (or claimed) would make the
		// kernel reuse that mount's superblock for fuseblk instead of
		// creating ours: refuse it up front. The exclusive open is only a
		// probe; the fuseblk mount makes the lasting claim.
		probe, err := unix.Open(path, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			f.Close()
			if errors.Is(err, unix.EBUSY) {
				return nil, false, errors.New("the device is in use (already mounted, or claimed by another program)")
			}
			return nil, false, err
		}
		unix.Close(probe)
		return f, true, nil
	case st.Mode().IsRegular():
		if err := lockImage(f); err != nil {
			f.Close()
			return nil, false, fmt.Errorf("the image is in use by another mount (%v)", err)
		}
		return f, false, nil
	}
	f.Close()
	return nil, false, fmt.Errorf("not a block device or a regular file (%s)", st.Mode().Type())
}

// imageLockWait is how long lockImage waits for another mount's daemon
// to let go of an image.
const imageLockWait = 3 * time.Second

// lockImage locks an image file for this mount. The lock belongs to the
// open file, which the daemon of a mount holds until it exits, and
// unmounting a (non-fuseblk) FUSE mount does not wait for its daemon to
// exit: a mount made right after an umount of the same image may find the
// old daemon still on its way out, so a held lock is retried for a
// moment before the image is called busy.
func lockImage(f *os.File) error {
	deadline := time.Now().Add(imageLockWait)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err != unix.EWOULDBLOCK || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// createSuperblock creates the FUSE superblock, detached. The kernel
// sends INIT on the fuse descriptor now; the mount is attached only after
// the daemon has answered it. A block device is mounted as fuseblk, so
// that the kernel claims it exclusively.
func createSuperblock(src string, fuseFD int, block bool, p *fdpass.MountParams) (int, error) {
	fsfd, err := fusemount.Create(fusemount.Config{
		Block: block, FuseFD: fuseFD, Source: src, Subtype: p.Subtype,
		MaxRead: p.MaxRead, BlockSize: p.BlockSize, ReadOnly: p.ReadOnly,
	})
	switch {
	case errors.Is(err, unix.EBUSY):
		return -1, failf(exitFailure, "%s: the device is already in use (mounted elsewhere?)", src)
	case err != nil:
		return -1, failf(exitFailure, "%s: %v", src, err)
	}
	return fsfd, nil
}

// readAheadRequests is how many of the daemon's largest READs the mount's
// read-ahead window holds. With one, a sequential reader waits for each
// request in turn; with several in flight the daemon reads the device for
// the next while the kernel copies the last (a cold 512 MiB read went
// from about 0.8 to 1.5 GB/s with four on a loop device).
const readAheadRequests = 4

// raiseReadAhead lets buffered reads use requests as large as the daemon
// serves, several at a time.
func raiseReadAhead(target string, maxRead uint32, logf func(string, ...any)) {
	if maxRead == 0 {
		return
	}
	if err := fusemount.RaiseReadAhead(target, readAheadRequests*int(maxRead>>10)); err != nil {
		logf("raising read-ahead: %v", err)
	}
}

// spawned is a daemon mount.safe started itself.
type spawned struct {
	cmd *exec.Cmd
}

// finish lets a successfully mounted daemon run on alone, or reaps one
// whose mount failed.
func (d *spawned) finish(mounted bool) {
	if mounted {
		d.cmd.Process.Release()
		return
	}
	done := make(chan struct{})
	go func() { d.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		d.cmd.Process.Kill()
		<-done
	}
}

// connectDaemon reaches the service socket, or starts a daemon as a child
// over a socketpair when no service is listening.
func connectDaemon(logf func(string, ...any)) (*fdpass.Conn, *spawned, error) {
	if _, err := os.Stat(socketPath); err == nil {
		c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: socketPath, Net: "unixpacket"})
		if err == nil {
			logf("connected to %s", socketPath)
			return fdpass.NewConn(c), nil, nil
		}
		logf("%s: %v; starting a daemon instead", socketPath, err)
	}
	path, err := findDaemon()
	if err != nil {
		return nil, nil, err
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, failf(exitSystem, "socketpair: %v", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "safefsd-control"), os.NewFile(uintptr(fds[1]), "safefsd-control")
	cmd := exec.Command(path, "--fdpass-fd", "3")
	cmd.ExtraFiles = []*os.File{theirs}
	// The daemon outlives this command, so it must not hold its output
	// open: a caller reading mount.safe's output to the end would wait
	// for the unmount. Refusals reach the user through the protocol; what
	// the daemon logs later (damaged objects) goes to the kernel log, where
	// a kernel mount's filesystem errors would have gone.
	if kmsg, err := os.OpenFile("/dev/kmsg", os.O_WRONLY|syscall.O_CLOEXEC, 0); err == nil {
		defer kmsg.Close()
		cmd.Stderr = kmsg
	}
	// Its own session: the daemon outlives this command and must not get
	// the terminal's signals.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		ours.Close()
		return nil, nil, failf(exitSystem, "starting %s: %v", path, err)
	}
	logf("started %s (pid %d)", path, cmd.Process.Pid)
	conn, err := fdpass.FileConn(ours)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, nil, failf(exitSystem, "%v", err)
	}
	return conn, &spawned{cmd: cmd}, nil
}

// findDaemon looks for safefsd beside this executable, then where
// packages install it.
func findDaemon() (string, error) {
	var candidates []string
	if exe, err := os.Executable(); err == nil {
		candidates = append(candidates, filepath.Join(filepath.Dir(exe), "safefsd"))
	}
	candidates = append(candidates, daemonPaths...)
	for _, c := range candidates {
		if st, err := os.Stat(c); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return c, nil
		}
	}
	return "", failf(exitSystem, "no safefsd service at %s and no safefsd program found (looked in %s)", socketPath, strings.Join(candidates, ", "))
}
