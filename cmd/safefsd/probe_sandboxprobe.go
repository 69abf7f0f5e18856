//go:build sandboxprobe

package main

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A test-only build: right after confinement the daemon tries the escape
// named by SAFEFSD_PROBE. The sandbox must stop each one: open fails with
// EACCES (the refusal reaches the peer as the probe's report); the others
// are not on the seccomp allow-list and kill the process with SIGSYS.
func init() {
	afterConfine = probe
}

func probe() error {
	name := os.Getenv("SAFEFSD_PROBE")
	var err error
	switch name {
	case "":
		return nil
	case "open":
		var f *os.File
		if f, err = os.Open("/etc/passwd"); err == nil {
			f.Close()
		}
	case "socket":
		var fd int
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0); err == nil {
			unix.Close(fd)
		}
	case "execve":
		err = syscall.Exec("/bin/true", []string{"true"}, nil)
	case "mount":
		err = unix.Mount("none", "/tmp", "tmpfs", 0, "")
	case "ptrace":
		err = unix.PtraceAttach(os.Getppid())
	case "setuid":
		err = unix.Setresuid(0, 0, 0)
	case "tiocsti":
		// Pushing input into a terminal the daemon might have inherited.
		c := byte('x')
		_, _, e := unix.Syscall(unix.SYS_IOCTL, 2, unix.TIOCSTI, uintptr(unsafe.Pointer(&c)))
		if e != 0 {
			err = e
		}
	case "fork":
		// A new process, not a thread.
		r, _, e := unix.RawSyscall6(unix.SYS_CLONE, uintptr(unix.SIGCHLD), 0, 0, 0, 0, 0)
		if e == 0 && r == 0 {
			unix.RawSyscall(unix.SYS_EXIT, 0, 0, 0) // the child, if the sandbox failed
		}
		if e != 0 {
			err = e
		}
	default:
		return fmt.Errorf("sandbox probe: unknown probe %q", name)
	}
	if err == nil {
		return fmt.Errorf("sandbox probe %s: succeeded", name)
	}
	return fmt.Errorf("sandbox probe %s: %v", name, err)
}
