// Package sandbox confines the daemon before it reads a single byte of an
// untrusted filesystem: an unprivileged user, no supplementary groups, no
// capabilities, and no_new_privs so nothing it could exec regains any.
//
// The descriptors the daemon needs (the device, /dev/fuse, the control
// socket) are open before confinement; afterwards it needs no privilege at
// all, and a seccomp allow-list whose default action kills the process
// makes sure it cannot open files, create sockets, exec, mount or trace.
package sandbox

import (
	"bufio"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// User is the dedicated system user the daemon switches to when it
// exists; otherwise it uses nobody.
const User = "safefsd"

// nobody is the overflow id, used when no dedicated user and no "nobody"
// entry exist.
const nobody = 65534

// Status is what the kernel says about the confined process.
type Status struct {
	Uid, Gid   int
	CapEff     uint64
	NoNewPrivs bool
	// Seccomp reports a filter in place (Seccomp: 2 in /proc).
	Seccomp bool
}

// SetNoNewPrivs sets no_new_privs on the calling thread; threads created
// afterwards inherit it. Call it from an init function of package main:
// Go runs initialization on the main thread, so every thread the runtime
// starts later (all but a few of its own) carries the flag, and
// /proc/PID/status shows it. (The flag is per thread, and Go has no way to
// set it on all threads of a cgo program; a seccomp filter loaded with
// TSYNC will copy it to the rest.)
func SetNoNewPrivs() error {
	return unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
}

// Confine drops the process's privileges for good. Started as root, it
// switches every thread to the dedicated user (or nobody), clears the
// supplementary groups and, with them, every capability; in any case it
// sets no_new_privs and loads the seccomp allow-list. It checks the result
// with the kernel and fails if anything was left.
func Confine() (Status, error) {
	if os.Geteuid() == 0 {
		uid, gid := target()
		// Go applies these to every thread of the process.
		if err := syscall.Setgroups(nil); err != nil {
			return Status{}, fmt.Errorf("sandbox: dropping supplementary groups: %w", err)
		}
		if err := syscall.Setresgid(gid, gid, gid); err != nil {
			return Status{}, fmt.Errorf("sandbox: switching to group %d: %w", gid, err)
		}
		if err := syscall.Setresuid(uid, uid, uid); err != nil {
			return Status{}, fmt.Errorf("sandbox: switching to user %d: %w", uid, err)
		}
	}
	if err := SetNoNewPrivs(); err != nil {
		return Status{}, fmt.Errorf("sandbox: setting no_new_privs: %w", err)
	}
	// Read the kernel's view while the filesystem is still reachable: the
	// filter below forbids opening anything.
	st, err := Current()
	if err != nil {
		return st, err
	}
	if err := LoadSeccomp(); err != nil {
		return st, err
	}
	st.Seccomp = true
	if st.Uid == 0 || st.Gid == 0 || st.CapEff != 0 || !st.NoNewPrivs {
		return st, fmt.Errorf("sandbox: confinement incomplete: uid %d, gid %d, effective capabilities %#x, no_new_privs %v",
			st.Uid, st.Gid, st.CapEff, st.NoNewPrivs)
	}
	return st, nil
}

// target returns the uid and gid to switch to.
func target() (int, int) {
	for _, name := range []string{User, "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.Atoi(u.Uid)
		gid, err2 := strconv.Atoi(u.Gid)
		if err1 == nil && err2 == nil && uid != 0 && gid != 0 {
			return uid, gid
		}
	}
	return nobody, nobody
}

// Current reads the process's credentials from /proc/self/status.
func Current() (Status, error) {
	return ReadStatus("/proc/self/status")
}

// ReadStatus parses a /proc/PID/status file (for tests that inspect the
// daemon from outside).
func ReadStatus(path string) (Status, error) {
	f, err := os.Open(path)
	if err != nil {
		return Status{}, fmt.Errorf("sandbox: %w", err)
	}
	defer f.Close()
	st := Status{Uid: -1, Gid: -1}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		switch k {
		case "Uid":
			st.Uid, _ = strconv.Atoi(fields[1]) // effective
		case "Gid":
			st.Gid, _ = strconv.Atoi(fields[1])
		case "CapEff":
			st.CapEff, _ = strconv.ParseUint(fields[0], 16, 64)
		case "NoNewPrivs":
			st.NoNewPrivs = fields[0] == "1"
		case "Seccomp":
			st.Seccomp = fields[0] == "2"
		}
	}
	return st, sc.Err()
}
