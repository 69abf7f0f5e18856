package hostile

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"safefs/internal/testimg"
	"safefs/internal/testmount"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testimg.Cleanup()
	testmount.Cleanup()
	os.Exit(code)
}

// memoryBound is the peak resident size (VmHWM) no daemon may pass, on any
// image: generous (the caches hold 20 MiB of blocks and 12 MiB of inodes), so
// that only growth with the image's size or damage trips it.
const memoryBound = 256 << 20

// damageLine matches a daemon log line that names a damaged object.
var damageLine = regexp.MustCompile(`\b(inode|block|group) \d+|device offset \d+`)

// row is one image's line in a test's table.
type row struct {
	name   string
	served bool
	// why is the refusal (mount.safe's message), or for a served image
	// the first error the walk saw.
	why  string
	walk walkResult
	hwm  int64
	// took is the time from mount to unmount.
	took time.Duration
	// logs are the daemon's log lines.
	logs []string
}

// sha256File returns the SHA-256 of a file (an image or a device), as
// for sha256sum, except that holes are not read: the sum covers each data
// segment (SEEK_DATA/SEEK_HOLE) with its offset, and the size, so that a
// 4 GiB sparse image costs what its data costs. Any write changes it.
func sha256File(t testing.TB, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	size := st.Size()
	fmt.Fprintf(h, "size %d\n", size)
	fd := int(f.Fd())
	for off := int64(0); off < size; {
		d, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			break
		}
		if err != nil { // no SEEK_DATA here: read it all
			d = off
		}
		end, err := unix.Seek(fd, d, unix.SEEK_HOLE)
		if err != nil {
			end = size
		}
		fmt.Fprintf(h, "data %d %d\n", d, end-d)
		if _, err := io.Copy(h, io.NewSectionReader(f, d, end-d)); err != nil {
			t.Fatalf("reading %s: %v", p, err)
		}
		off = end
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// walkFunc walks the filesystem mounted on dir within lim; abort ends
// its FUSE connection (for a hang).
type walkFunc func(dir string, lim walkLimits, abort func()) walkResult

// mountAndWalk mounts src read-only through mount.safe and svc, walks it
// completely, unmounts, and checks what must hold whatever src holds:
// mount.safe either mounts or refuses with a message naming src, nothing
// hangs, the daemon neither dies nor grows past memoryBound, every error
// the walk sees is named in the daemon's log, the daemon exits once
// unmounted, nothing stays mounted, and src is not written (same SHA-256
// before and after). Failures name the image (name).
func mountAndWalk(t *testing.T, svc *testmount.Service, name, src string, lim walkLimits) row {
	t.Helper()
	return mountAnd(t, svc, name, src, lim, walkMount)
}

// mountAnd is mountAndWalk with another walk.
func mountAnd(t *testing.T, svc *testmount.Service, name, src string, lim walkLimits, walk walkFunc) (out row) {
	t.Helper()
	before := sha256File(t, src)
	defer func() {
		if after := sha256File(t, src); after != before {
			t.Errorf("%s: the image was written: sha256 %s before, %s after", name, before, after)
		}
	}()
	dir := t.TempDir()
	start := time.Now()
	r := svc.Mount(t, src, dir, "-o", "ro")
	out = row{name: name}
	defer func() { out.took = time.Since(start) }()
	d := r.Daemon
	if r.Status == -1 {
		t.Errorf("%s: mount.safe hung: %s", name, r.Output)
	}
	if r.Status != 0 {
		out.why = lastLine(r.Output)
		if r.Status != 32 || !strings.Contains(r.Output, src) {
			t.Errorf("%s: mount.safe exited %d, want 0 or 32 with a message naming %s:\n%s", name, r.Status, src, r.Output)
		}
		if testmount.IsMountPoint(dir) {
			t.Errorf("%s: refused, but something is mounted on %s", name, dir)
			unix.Unmount(dir, unix.MNT_DETACH)
		}
		if d != nil {
			st := d.Wait(10 * time.Second)
			if st == nil {
				t.Errorf("%s: safefsd still running 10 s after refusing", name)
				d.Kill()
			} else if !st.Exited() || st.ExitCode() != 1 {
				t.Errorf("%s: safefsd ended with %v after refusing, want exit status 1; log:\n%s", name, st, d.Log())
			}
			out.logs = logLines(d.Log())
			checkLog(t, name, d.Log())
		}
		return out
	}
	out.served = true
	if d == nil {
		testmount.Unmount(dir)
		t.Fatalf("%s: mounted, but no daemon of the service serves it", name)
	}
	conn, err := testmount.Conn(dir)
	if err != nil {
		unix.Unmount(dir, unix.MNT_DETACH)
		t.Fatalf("%s: %v", name, err)
	}
	out.walk = walk(dir, lim, func() { testmount.Abort(conn) })
	if len(out.walk.firstErrs) > 0 {
		out.why = out.walk.firstErrs[0]
	}
	hwm, herr := d.VmHWM()
	out.hwm = hwm
	if err := testmount.Unmount(dir); err != nil {
		t.Errorf("%s: umount: %v; detaching", name, err)
		unix.Unmount(dir, unix.MNT_DETACH)
		testmount.Abort(conn)
	}
	st := d.Wait(10 * time.Second)
	if st == nil {
		t.Errorf("%s: safefsd still running 10 s after the unmount; log:\n%s", name, d.Log())
		d.Kill()
		d.Wait(10 * time.Second)
	}
	log := d.Log()
	out.logs = logLines(log)
	switch {
	case len(out.walk.hung) > 0:
		t.Errorf("%s: operations hung (more than %v): %q; log:\n%s", name, lim.opTimeout, out.walk.hung, log)
	case d.OverLimit():
		t.Errorf("%s: safefsd grew past %d MiB and was killed", name, testmount.MemoryGuard>>20)
	case out.walk.lost:
		t.Errorf("%s: the FUSE connection ended during the walk (%s); safefsd %v; log:\n%s", name, out.walk.errSummary(), st, log)
	case herr != nil:
		t.Errorf("%s: reading safefsd's peak memory: %v", name, herr)
	case st != nil && st.Exited() && st.ExitCode() == 1 && testmount.AbortedByOthers(conn, log):
		t.Logf("%s: another process aborted this mount's FUSE connection (%d); not checking how safefsd ended", name, conn)
	case st != nil && (!st.Exited() || st.ExitCode() != 0):
		t.Errorf("%s: safefsd ended with %v after the unmount, want status 0; log:\n%s", name, st, log)
	}
	if hwm > memoryBound {
		t.Errorf("%s: safefsd's peak resident size was %d MiB, more than %d MiB", name, hwm>>20, memoryBound>>20)
	}
	checkLog(t, name, log)
	if damage := out.walk.damage(); damage > 0 && !damageLine.MatchString(log) {
		t.Errorf("%s: the walk saw %d errors (%s, first: %s), but no log line names a damaged inode or block; log:\n%s",
			name, damage, out.walk.errSummary(), out.why, log)
	}
	return out
}

// damage counts the errors that say an object is damaged or unreadable.
func (r *walkResult) damage() int {
	return r.errs[unix.EIO] + r.errs[unix.EUCLEAN] + r.errs[unix.EBADMSG]
}

// checkLog fails the test if the daemon's log shows a panic.
func checkLog(t *testing.T, name, log string) {
	t.Helper()
	for _, bad := range []string{"panic", "goroutine ", "fatal error"} {
		if strings.Contains(log, bad) {
			t.Errorf("%s: safefsd's log shows %q:\n%s", name, bad, log)
			return
		}
	}
}

func logLines(s string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

func lastLine(s string) string {
	l := logLines(s)
	if len(l) == 0 {
		return ""
	}
	return l[len(l)-1]
}

// table formats rows: image, served or refused, entries, errors seen,
// peak memory, log lines, and the refusal or first error.
func table(rows []row) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-36s %-8s %7s %-28s %6s %4s %6s  %s\n", "image", "result", "entries", "errors seen", "VmHWM", "log", "time", "refusal, or first error")
	for _, r := range rows {
		res := "refused"
		entries, errs, hwm := "-", "-", "-"
		if r.served {
			res = "served"
			entries = fmt.Sprint(r.walk.entries)
			errs = r.walk.errSummary()
			if errs == "" {
				errs = "none"
			}
			hwm = fmt.Sprintf("%dM", r.hwm>>20)
		}
		why := r.why
		if len(why) > 160 {
			why = why[:160] + "..."
		}
		fmt.Fprintf(&b, "%-36s %-8s %7s %-28s %6s %4d %5.1fs  %s\n", r.name, res, entries, errs, hwm, len(r.logs), r.took.Seconds(), why)
	}
	return b.String()
}
