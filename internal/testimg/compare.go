//go:build linux

package testimg

import (
	"bytes"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// CompareOpts turns off comparisons of fields that a given pair of views
// cannot be expected to agree on.
type CompareOpts struct {
	// IgnoreAtime skips Atime (e.g. when one side was read with atime
	// updates enabled).
	IgnoreAtime bool
	// IgnoreSegments skips Segments even when both sides collected them.
	IgnoreSegments bool
	// IgnoreBtime skips Btime even when both sides know it.
	IgnoreBtime bool
	// IgnoreCtime skips Ctime, which differs between a source tree and the
	// image made from it (mke2fs copies ctime without nanoseconds).
	IgnoreCtime bool
	// IgnoreIno skips inode numbers, which only agree between two views of
	// the same image.
	IgnoreIno bool
}

// maxCompareErrors bounds Compare's output: past this many mismatches the
// rest is noise from one root cause.
const maxCompareErrors = 50

// Compare reports every difference between want (usually KernelWalk's) and
// got (a reader's) with t.Errorf as "PATH: FIELD: want W, got G", including
// paths present on one side only, and stops after 50 errors. Paths are
// visited in sorted order so that the output is stable. Segments are
// compared only when both sides are non-nil and Btime only when both are
// non-zero, since a reader or a kernel may not know them; an empty and a nil
// Xattrs map are equal.
func Compare(t testing.TB, want, got map[string]Entry, opts CompareOpts) {
	t.Helper()
	n := 0
	errorf := func(p, field string, w, g any) bool {
		t.Helper()
		if n >= maxCompareErrors {
			return false
		}
		n++
		t.Errorf("%s: %s: want %v, got %v", p, field, w, g)
		if n == maxCompareErrors {
			t.Errorf("testimg: Compare stopped after %d mismatches", maxCompareErrors)
		}
		return n < maxCompareErrors
	}
	paths := make([]string, 0, len(want)+len(got))
	for p := range want {
		paths = append(paths, p)
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	for _, p := range paths {
		w, wok := want[p]
		g, gok := got[p]
		switch {
		case !gok:
			if !errorf(p, "presence", "present", "missing") {
				return
			}
			continue
		case !wok:
			if !errorf(p, "presence", "absent", "extra entry") {
				return
			}
			continue
		}
		for _, d := range diffEntry(w, g, opts) {
			if !errorf(p, d.field, d.want, d.got) {
				return
			}
		}
	}
}

type fieldDiff struct {
	field     string
	want, got string
}

// diffEntry lists the differing fields of two entries, formatted for humans:
// modes in octal, times as sec.nsec, xattrs by name.
func diffEntry(w, g Entry, opts CompareOpts) []fieldDiff {
	var d []fieldDiff
	add := func(field string, want, got any) {
		d = append(d, fieldDiff{field, fmt.Sprint(want), fmt.Sprint(got)})
	}
	if w.Path != g.Path {
		add("Path", strconv.Quote(w.Path), strconv.Quote(g.Path))
	}
	if !opts.IgnoreIno && w.Ino != g.Ino {
		add("Ino", w.Ino, g.Ino)
	}
	if w.Mode != g.Mode {
		add("Mode", modeString(w.Mode), modeString(g.Mode))
	}
	if w.Uid != g.Uid {
		add("Uid", w.Uid, g.Uid)
	}
	if w.Gid != g.Gid {
		add("Gid", w.Gid, g.Gid)
	}
	if w.Size != g.Size {
		add("Size", w.Size, g.Size)
	}
	if w.Nlink != g.Nlink {
		add("Nlink", w.Nlink, g.Nlink)
	}
	if w.Rdev != g.Rdev {
		add("Rdev", fmt.Sprintf("%d:%d", Major(w.Rdev), Minor(w.Rdev)), fmt.Sprintf("%d:%d", Major(g.Rdev), Minor(g.Rdev)))
	}
	if !opts.IgnoreAtime && w.Atime != g.Atime {
		add("Atime", w.Atime, g.Atime)
	}
	if w.Mtime != g.Mtime {
		add("Mtime", w.Mtime, g.Mtime)
	}
	if !opts.IgnoreCtime && w.Ctime != g.Ctime {
		add("Ctime", w.Ctime, g.Ctime)
	}
	if !opts.IgnoreBtime && !w.Btime.IsZero() && !g.Btime.IsZero() && w.Btime != g.Btime {
		add("Btime", w.Btime, g.Btime)
	}
	if w.Target != g.Target {
		add("Target", strconv.Quote(w.Target), strconv.Quote(g.Target))
	}
	d = append(d, diffXattrs(w.Xattrs, g.Xattrs)...)
	if w.SHA256 != g.SHA256 {
		add("SHA256", w.SHA256, g.SHA256)
	}
	if !opts.IgnoreSegments && w.Segments != nil && g.Segments != nil && !segmentsEqual(w.Segments, g.Segments) {
		add("Segments", formatSegments(w.Segments), formatSegments(g.Segments))
	}
	return d
}

func diffXattrs(w, g map[string][]byte) []fieldDiff {
	var d []fieldDiff
	names := make([]string, 0, len(w)+len(g))
	for n := range w {
		names = append(names, n)
	}
	for n := range g {
		if _, ok := w[n]; !ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		wv, wok := w[n]
		gv, gok := g[n]
		field := "Xattrs[" + n + "]"
		switch {
		case !gok:
			d = append(d, fieldDiff{field, formatValue(wv), "missing"})
		case !wok:
			d = append(d, fieldDiff{field, "absent", formatValue(gv)})
		case !bytes.Equal(wv, gv):
			d = append(d, fieldDiff{field, formatValue(wv), formatValue(gv)})
		}
	}
	return d
}

// formatValue shows short printable values as quoted strings and anything
// else by length, prefix and a digest, because a 20000-byte value in a
// test log helps nobody.
func formatValue(v []byte) string {
	printable := true
	for _, c := range v {
		if c < 0x20 || c > 0x7e {
			printable = false
			break
		}
	}
	if printable && len(v) <= 64 {
		return strconv.Quote(string(v))
	}
	pre := v
	if len(pre) > 16 {
		pre = pre[:16]
	}
	return fmt.Sprintf("%d bytes %x... (fnv %016x)", len(v), pre, fnv64(v))
}

func fnv64(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

func segmentsEqual(a, b [][2]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func formatSegments(s [][2]int64) string {
	parts := make([]string, len(s))
	for i, x := range s {
		parts[i] = fmt.Sprintf("[%d,%d)", x[0], x[1])
	}
	return "{" + strings.Join(parts, " ") + "}"
}
