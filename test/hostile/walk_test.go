package hostile

import (
	"errors"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// walkLimits bound a walk of a hostile filesystem: a damaged image can
// claim files of exabytes, directories that contain themselves, and
// chains of any depth.
type walkLimits struct {
	// opTimeout is how long any one system call may take before the
	// walk calls it a hang: it aborts the FUSE connection, which makes
	// the call (and every later one) fail, and stops.
	opTimeout time.Duration
	// maxEntries bounds the directory entries visited.
	maxEntries int
	// maxDepth bounds the directory depth descended.
	maxDepth int
	// maxFileBytes bounds the bytes read of one file, and maxBytes of
	// all files together.
	maxFileBytes, maxBytes int64
	// statEvery, when more than 1, visits only every statEvery-th entry
	// of directories of more than 10,000 entries (all are listed): for
	// directories too large to look every name up in.
	statEvery int
	// progress, if set, counts the entries visited as the walk goes, for
	// a test that acts in the middle of a walk.
	progress *atomic.Int64
}

var defaultLimits = walkLimits{
	opTimeout:    15 * time.Second,
	maxEntries:   200000,
	maxDepth:     256,
	maxFileBytes: 512 << 20,
	maxBytes:     2 << 30,
}

// walkResult is what a walk saw.
type walkResult struct {
	entries int
	// listed counts the names directories listed, bytes the file data
	// read.
	listed int
	bytes  int64
	// errs counts the failed operations by errno; firstErrs keeps the
	// first few as "op path: error".
	errs      map[syscall.Errno]int
	firstErrs []string
	// hung lists operations that took longer than opTimeout.
	hung []string
	// lost says the FUSE connection ended during the walk (ENOTCONN or
	// ECONNABORTED): the daemon died, or a hang was aborted.
	lost bool
	// cut counts what the limits left out: files read only in part,
	// directories not descended into, entries not visited.
	cut int
}

// errorCount is the number of failed operations.
func (r *walkResult) errorCount() int {
	n := 0
	for _, c := range r.errs {
		n += c
	}
	return n
}

// errSummary lists the errnos seen, most frequent first: "EUCLEAN×3 EIO×1".
func (r *walkResult) errSummary() string {
	type kv struct {
		e syscall.Errno
		n int
	}
	var l []kv
	for e, n := range r.errs {
		l = append(l, kv{e, n})
	}
	sort.Slice(l, func(i, j int) bool { return l[i].n > l[j].n || l[i].n == l[j].n && l[i].e < l[j].e })
	var parts []string
	for _, x := range l {
		parts = append(parts, fmt.Sprintf("%s×%d", errnoName(x.e), x.n))
	}
	return strings.Join(parts, " ")
}

func errnoName(e syscall.Errno) string {
	if n := unix.ErrnoName(e); n != "" {
		return n
	}
	return "errno " + strconv.Itoa(int(e))
}

// walker walks a mounted filesystem through system calls on directory
// descriptors (openat, fstatat, getdents, readlinkat, and the xattr calls
// through /proc/self/fd), so that no path grows past PATH_MAX, and never
// stops at an error: it records it and goes on with the next object.
type walker struct {
	lim   walkLimits
	abort func() // ends the FUSE connection
	res   walkResult
	// seen holds the directories entered (by inode number), so that a
	// directory reached twice (a hard-linked directory, a loop) is
	// walked once.
	seen map[uint64]bool
	buf  []byte
}

// walkMount walks everything under dir; abort ends the mount's FUSE
// connection, for a hang.
func walkMount(dir string, lim walkLimits, abort func()) walkResult {
	w := &walker{lim: lim, abort: abort, seen: map[uint64]bool{}, buf: make([]byte, 1<<20)}
	w.res.errs = map[syscall.Errno]int{}
	var fd int
	if w.do("open", ".", func() (err error) {
		fd, err = unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		return err
	}) != nil {
		return w.res
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if w.do("stat", ".", func() error { return unix.Fstat(fd, &st) }) == nil {
		w.seen[st.Ino] = true
	}
	w.xattrs(dir, ".")
	w.dir(fd, ".", 0)
	return w.res
}

// do runs one system call under the time limit and records its error.
// After a hang or the end of the connection it runs nothing more.
func (w *walker) do(op, rel string, fn func() error) error {
	if w.res.lost {
		return unix.ENOTCONN
	}
	done := make(chan error, 1)
	go func() { done <- fn() }()
	timer := time.NewTimer(w.lim.opTimeout)
	var err error
	select {
	case err = <-done:
		timer.Stop()
	case <-timer.C:
		w.res.hung = append(w.res.hung, op+" "+rel)
		w.abort()
		select {
		case err = <-done:
		case <-time.After(w.lim.opTimeout):
			// Even an aborted connection did not release the call:
			// leave it behind, and say so.
			w.res.hung = append(w.res.hung, op+" "+rel+" (still blocked after the connection was aborted)")
			err = unix.ETIMEDOUT
		}
		w.res.lost = true
	}
	if err == nil {
		return nil
	}
	var e syscall.Errno
	if !errors.As(err, &e) {
		e = unix.EIO
	}
	if e == unix.ENOTCONN || e == unix.ECONNABORTED {
		w.res.lost = true
	}
	w.res.errs[e]++
	if len(w.res.firstErrs) < 8 {
		w.res.firstErrs = append(w.res.firstErrs, fmt.Sprintf("%s %s: %v", op, rel, err))
	}
	return err
}

// readNames lists a directory, without "." and "..".
func (w *walker) readNames(fd int, rel string) []string {
	var names []string
	for {
		var n int
		if w.do("getdents", rel, func() (err error) {
			n, err = unix.Getdents(fd, w.buf)
			return err
		}) != nil || n <= 0 {
			return names
		}
		_, _, names = unix.ParseDirent(w.buf[:n], -1, names)
		if len(names) > w.lim.maxEntries {
			w.res.cut++
			return names
		}
	}
}

// dir walks the directory open as fd, whose path is rel.
func (w *walker) dir(fd int, rel string, depth int) {
	names := w.readNames(fd, rel)
	w.res.listed += len(names)
	for i, name := range names {
		if w.res.lost {
			return
		}
		if w.lim.statEvery > 1 && len(names) > 10000 && i%w.lim.statEvery != 0 {
			continue
		}
		if w.lim.progress != nil {
			w.lim.progress.Add(1)
		}
		if w.res.entries >= w.lim.maxEntries {
			w.res.cut++
			return
		}
		w.res.entries++
		child := path.Join(rel, name)
		var st unix.Stat_t
		if w.do("lstat", child, func() error { return unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) }) != nil {
			continue
		}
		w.xattrs(fmt.Sprintf("/proc/self/fd/%d/%s", fd, name), child)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			w.do("readlink", child, func() error {
				_, err := unix.Readlinkat(fd, name, w.buf[:unix.PathMax])
				return err
			})
		case unix.S_IFREG:
			w.file(fd, name, child)
		case unix.S_IFDIR:
			if w.seen[st.Ino] {
				continue
			}
			w.seen[st.Ino] = true
			if depth+1 > w.lim.maxDepth {
				w.res.cut++
				continue
			}
			var cfd int
			if w.do("open", child, func() (err error) {
				cfd, err = unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
				return err
			}) != nil {
				continue
			}
			w.dir(cfd, child, depth+1)
			unix.Close(cfd)
		}
	}
}

// file reads a regular file to its end (within the limits), and asks
// where its first data and its first hole are (SEEK_DATA, SEEK_HOLE).
func (w *walker) file(dirfd int, name, rel string) {
	var fd int
	if w.do("open", rel, func() (err error) {
		fd, err = unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		return err
	}) != nil {
		return
	}
	defer unix.Close(fd)
	for _, whence := range []int{unix.SEEK_DATA, unix.SEEK_HOLE} {
		w.do("lseek", rel, func() error {
			_, err := unix.Seek(fd, 0, whence)
			if err == unix.ENXIO { // no data at all: a hole or empty
				return nil
			}
			return err
		})
	}
	var off int64
	for {
		if off >= w.lim.maxFileBytes || w.res.bytes >= w.lim.maxBytes {
			w.res.cut++
			return
		}
		var n int
		if w.do("read", rel, func() (err error) {
			n, err = unix.Pread(fd, w.buf, off)
			return err
		}) != nil || n == 0 {
			return
		}
		off += int64(n)
		w.res.bytes += int64(n)
	}
}

// xattrs lists the extended attributes of p (not following a symlink)
// and reads each.
func (w *walker) xattrs(p, rel string) {
	var n int
	if w.do("listxattr", rel, func() (err error) {
		n, err = unix.Llistxattr(p, w.buf[:64<<10])
		return err
	}) != nil {
		return
	}
	var names []string
	for _, s := range strings.Split(string(w.buf[:n]), "\x00") {
		if s != "" {
			names = append(names, s)
		}
	}
	for _, a := range names {
		w.do("getxattr "+a, rel, func() error {
			_, err := unix.Lgetxattr(p, a, w.buf[:64<<10])
			return err
		})
	}
}
