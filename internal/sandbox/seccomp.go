package sandbox

import (
	"fmt"
	"os"

	seccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"
)

// allowed lists every system call the confined daemon makes: the Go
// runtime (threads, memory, signals, timers, the network poller), reading
// the device (pread64), serving /dev/fuse (read, writev), and the control
// socket (recvmsg, sendmsg). Nothing here opens a file, creates a socket,
// executes a program, mounts or traces: those kill the process (opening a
// file fails with EACCES instead, see LoadSeccomp).
var allowed = []string{
	// I/O on descriptors the daemon already holds.
	"read", "write", "readv", "writev", "pread64", "preadv", "pwrite64",
	"close", "fstat", "newfstatat", "lseek", "fcntl", "dup", "dup3",
	"recvmsg", "sendmsg", "recvfrom", "sendto", "shutdown", "getsockopt", "getsockname", "getpeername",
	"poll", "ppoll", "pselect6", "select",
	"epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2", "eventfd2", "pipe2",
	// Memory.
	"mmap", "munmap", "mprotect", "madvise", "mremap", "brk", "mincore", "membarrier",
	// Threads, scheduling, time.
	"futex", "gettid", "getpid", "getppid", "tgkill", "tkill", "sched_yield", "sched_getaffinity",
	"nanosleep", "clock_nanosleep", "clock_gettime", "clock_getres", "gettimeofday",
	"set_robust_list", "rseq", "restart_syscall", "getrlimit", "prlimit64",
	"getuid", "geteuid", "getgid", "getegid", "getgroups",
	"timer_create", "timer_settime", "timer_delete", "setitimer",
	// Signals.
	"rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack",
	// Randomness for maps and crypto.
	"getrandom",
	// Leaving.
	"exit", "exit_group",
}

// allowedIoctls lists the only ioctl requests the daemon makes: the size of
// the block device. Any other request (TIOCSTI on an inherited terminal,
// block device or FUSE control ioctls) kills the process like any other
// call off the list.
var allowedIoctls = []uint64{unix.BLKGETSIZE64}

// LoadSeccomp installs the allow-list on every thread (TSYNC, which also
// copies no_new_privs to threads that lacked it). The default action kills
// the whole process: a daemon that tries anything else has been subverted
// and must not go on. clone is allowed only for threads; clone3 answers
// ENOSYS so that libc falls back to clone.
//
// SAFEFSD_SECCOMP=trap (SIGSYS with a stack trace) or =log (allow, but log
// to the audit log) help find a missing call while developing.
func LoadSeccomp() error {
	def := seccomp.ActKillProcess
	switch os.Getenv("SAFEFSD_SECCOMP") {
	case "trap":
		def = seccomp.ActTrap
	case "log":
		def = seccomp.ActLog
	}
	f, err := seccomp.NewFilter(def)
	if err != nil {
		return fmt.Errorf("sandbox: seccomp: %w", err)
	}
	defer f.Release()
	// The default bad-arch action kills only the thread, which would leave
	// the Go runtime half dead.
	if err := f.SetBadArchAction(seccomp.ActKillProcess); err != nil {
		return fmt.Errorf("sandbox: seccomp: %w", err)
	}
	// NewFilter already asks for TSYNC: the filter applies to every thread.
	if err := f.SetNoNewPrivsBit(true); err != nil {
		return fmt.Errorf("sandbox: seccomp: %w", err)
	}
	for _, name := range allowed {
		sc, err := seccomp.GetSyscallFromName(name)
		if err != nil {
			continue // not on this architecture
		}
		if err := f.AddRule(sc, seccomp.ActAllow); err != nil {
			return fmt.Errorf("sandbox: seccomp: allowing %s: %w", name, err)
		}
	}
	clone, err := seccomp.GetSyscallFromName("clone")
	if err != nil {
		return fmt.Errorf("sandbox: seccomp: %w", err)
	}
	thread, err := seccomp.MakeCondition(0, seccomp.CompareMaskedEqual, unix.CLONE_THREAD, unix.CLONE_THREAD)
	if err != nil {
		return fmt.Errorf("sandbox: seccomp: %w", err)
	}
	if err := f.AddRuleConditional(clone, seccomp.ActAllow, []seccomp.ScmpCondition{thread}); err != nil {
		return fmt.Errorf("sandbox: seccomp: %w", err)
	}
	ioctl, err := seccomp.GetSyscallFromName("ioctl")
	if err != nil {
		return fmt.Errorf("sandbox: seccomp: %w", err)
	}
	for _, req := range allowedIoctls {
		// The request is an unsigned int to the kernel: compare the low
		// 32 bits only, whatever the caller left in the upper half.
		c, err := seccomp.MakeCondition(1, seccomp.CompareMaskedEqual, 0xffffffff, req)
		if err != nil {
			return fmt.Errorf("sandbox: seccomp: %w", err)
		}
		if err := f.AddRuleConditional(ioctl, seccomp.ActAllow, []seccomp.ScmpCondition{c}); err != nil {
			return fmt.Errorf("sandbox: seccomp: allowing ioctl %#x: %w", req, err)
		}
	}
	// Opening files fails with EACCES rather than killing: libraries probe
	// optional files (go-fuse reads /proc/sys/fs/fuse/max_pages_limit when
	// the session starts) and cope with a refusal.
	for _, name := range []string{"open", "openat", "openat2", "creat"} {
		if sc, err := seccomp.GetSyscallFromName(name); err == nil {
			if err := f.AddRule(sc, seccomp.ActErrno.SetReturnCode(int16(unix.EACCES))); err != nil {
				return fmt.Errorf("sandbox: seccomp: %w", err)
			}
		}
	}
	if clone3, err := seccomp.GetSyscallFromName("clone3"); err == nil {
		if err := f.AddRule(clone3, seccomp.ActErrno.SetReturnCode(int16(unix.ENOSYS))); err != nil {
			return fmt.Errorf("sandbox: seccomp: %w", err)
		}
	}
	if err := f.Load(); err != nil {
		return fmt.Errorf("sandbox: loading the seccomp filter: %w", err)
	}
	return nil
}
