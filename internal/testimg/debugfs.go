//go:build linux

package testimg

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// debugfsErrors returns debugfs's stderr without its version banner.
// debugfs exits 0 even when a command fails (it prints e.g.
// "/x: File not found by ext2_lookup" to stderr), so anything left on
// stderr is the only reliable failure signal.
func debugfsErrors(stderr string) string {
	var keep []string
	for _, l := range strings.Split(stderr, "\n") {
		if strings.TrimSpace(l) == "" || strings.HasPrefix(l, "debugfs ") && strings.Contains(l, "(") && !strings.Contains(l, ":") {
			continue
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n")
}

// Debugfs runs `debugfs -R cmd img` read-only and returns its stdout. The
// test fails if debugfs exits non-zero or prints anything to stderr besides
// its banner. Paths inside cmd that contain spaces must be double-quoted;
// Quote does that.
func Debugfs(t testing.TB, img string, cmd string) string {
	t.Helper()
	requireTools(t, "debugfs")
	out, errOut, err := runDebugfs(img, cmd)
	if err != nil || debugfsErrors(errOut) != "" {
		t.Fatalf("testimg: debugfs -R %q %s: %v\n%s", cmd, img, err, errOut)
	}
	return out
}

func runDebugfs(img, cmd string) (string, string, error) {
	args := []string{"-R", cmd}
	if img != "" {
		args = append(args, img)
	}
	return runTool("debugfs", args...)
}

// Quote quotes s as one debugfs argument: debugfs's command parser takes
// "..." with "" standing for a literal double quote.
func Quote(s string) string { return quote(s) }

func quote(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// debugfsPath makes an absolute, quoted image path of a Walk-style path.
func debugfsPath(p string) string {
	if p == "." || p == "" {
		return quote("/")
	}
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	return quote(p)
}

var (
	statKeys = regexp.MustCompile(`(Size of extra inode fields|Inode checksum|File ACL|Fast link dest|Device major/minor number|Inode|Type|Mode|Flags|Generation|Version|User|Group|Project|Size|Links|Blockcount):`)
	statTime = regexp.MustCompile(`^\s*(ctime|atime|mtime|crtime|dtime):\s+(0x[0-9a-fA-F]+)(?::([0-9a-fA-F]+))?\s+--`)
)

// DebugfsStat runs `stat PATH` (PATH relative to the image root as in
// Entry.Path, or absolute) and returns its fields by the names debugfs
// prints: "Inode", "Type", "Mode", "Flags", "Generation", "Version", "User",
// "Group", "Project", "Size", "File ACL", "Links", "Blockcount",
// "Size of extra inode fields", "Inode checksum", "Fast link dest" (without
// the quotes), "Device major/minor number" (e.g. "259:70000"), and each
// timestamp ("ctime", "atime", "mtime", "crtime", "dtime") as printed raw
// ("0x6543abcd:12345678", or "0x6543abcd" with 128-byte inodes) plus
// "ctime_sec"/"ctime_nsec" etc. decoded as the kernel does:
// sec = int64(int32(lo)) + (extra&3)<<32, nsec = extra>>2. Xattrs appear as
// "xattr:NAME" with the rest of debugfs's line ("(LEN) = VALUE").
// "Size" is the file size (not the fragment size of the Fragment line).
func DebugfsStat(t testing.TB, img, path string) map[string]string {
	t.Helper()
	return parseStat(t, Debugfs(t, img, "stat "+debugfsPath(path)))
}

func parseStat(t testing.TB, out string) map[string]string {
	t.Helper()
	m := map[string]string{}
	inXattrs := false
	for _, line := range strings.Split(out, "\n") {
		if mt := statTime.FindStringSubmatch(line); mt != nil {
			name, lo, extra := mt[1], mt[2], mt[3]
			raw := lo
			if extra != "" {
				raw += ":" + extra
			}
			m[name] = raw
			sec, nsec, err := decodeDebugfsTime(lo, extra)
			if err != nil {
				t.Fatalf("testimg: debugfs stat: %s: %v", line, err)
			}
			m[name+"_sec"] = strconv.FormatInt(sec, 10)
			m[name+"_nsec"] = strconv.FormatInt(nsec, 10)
			inXattrs = false
			continue
		}
		if strings.HasPrefix(line, "Extended attributes:") {
			inXattrs = true
			continue
		}
		if inXattrs && strings.HasPrefix(line, "  ") {
			l := strings.TrimSpace(line)
			if name, rest, ok := strings.Cut(l, " "); ok {
				m["xattr:"+name] = rest
			}
			continue
		}
		inXattrs = false
		if strings.HasPrefix(line, "Fragment:") {
			continue // its "Size:" is the obsolete fragment size
		}
		if v, ok := strings.CutPrefix(line, "Fast link dest: "); ok {
			m["Fast link dest"] = unquoteDebugfs(v)
			continue
		}
		// "(New-style) Device major/minor number: 259:70000 (hex 103:11170)"
		// or without the prefix for the old encoding.
		if _, v, ok := strings.Cut(line, "Device major/minor number: "); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				m["Device major/minor number"] = f[0]
			}
			continue
		}
		locs := statKeys.FindAllStringSubmatchIndex(line, -1)
		for i, loc := range locs {
			// A key must start the line or follow a space, so that
			// "Inode checksum" is not read as "checksum" etc.
			if loc[0] > 0 && line[loc[0]-1] != ' ' {
				continue
			}
			end := len(line)
			if i+1 < len(locs) {
				end = locs[i+1][0]
			}
			key := line[loc[2]:loc[3]]
			val := strings.TrimSpace(line[loc[1]:end])
			if _, dup := m[key]; !dup {
				m[key] = val
			}
		}
	}
	return m
}

// unquoteDebugfs strips the double quotes debugfs puts around a fast
// symlink's target.
func unquoteDebugfs(s string) string {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s[1 : len(s)-1]
	}
	return s
}

// decodeDebugfsTime turns debugfs's "0xLO[:EXTRA]" into seconds and
// nanoseconds the way the kernel decodes an ext4 timestamp.
func decodeDebugfsTime(lo, extra string) (sec, nsec int64, err error) {
	l, err := strconv.ParseUint(strings.TrimPrefix(lo, "0x"), 16, 32)
	if err != nil {
		return 0, 0, err
	}
	sec = int64(int32(uint32(l)))
	if extra == "" {
		return sec, 0, nil
	}
	x, err := strconv.ParseUint(extra, 16, 32)
	if err != nil {
		return 0, 0, err
	}
	return sec + int64(x&3)<<32, int64(x >> 2), nil
}

// DebugfsDump extracts a file's content with `dump -p PATH OUT` into a temp
// file and returns it.
func DebugfsDump(t testing.TB, img, path string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "dump")
	Debugfs(t, img, "dump -p "+debugfsPath(path)+" "+quote(out))
	// -p copies the image's mode, which may be 0000: make it readable for
	// non-root callers.
	os.Chmod(out, 0o600)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("testimg: reading debugfs dump of %s: %v", path, err)
	}
	return b
}

// Extent is one leaf extent of an extent-mapped file: Len blocks from
// logical block Logical map to physical block Physical. Uninit marks an
// unwritten (preallocated) extent, which reads as zeros.
type Extent struct {
	Logical, Physical, Len uint64
	Uninit                 bool
}

var extentLine = regexp.MustCompile(`^\s*(\d+)/\s*(\d+)\s+(\d+)/\s*(\d+)\s+(\d+)\s*-\s*(\d+)\s+(\d+)(?:\s*-\s*(\d+))?\s+(\d+)\s*(.*)$`)

// DebugfsExtents returns the leaf extents of a file from `ex PATH` (debugfs
// prints "Level Entries Logical Physical Length Flags" rows; leaves are the
// rows whose level equals the tree depth). A file without extents (block
// map, inline data, fast symlink) yields nil.
func DebugfsExtents(t testing.TB, img, path string) []Extent {
	t.Helper()
	requireTools(t, "debugfs")
	out, errOut, err := runDebugfs(img, "ex "+debugfsPath(path))
	if e := debugfsErrors(errOut); err != nil || e != "" {
		if strings.Contains(e, "does not uses extent block maps") {
			return nil
		}
		t.Fatalf("testimg: debugfs ex %s: %v\n%s", path, err, errOut)
	}
	exts, perr := parseExtents(out)
	if perr != nil {
		t.Fatalf("testimg: debugfs ex %s: %v\n%s", path, perr, out)
	}
	return exts
}

func parseExtents(out string) ([]Extent, error) {
	var exts []Extent
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == "" || strings.HasPrefix(strings.TrimSpace(line), "Level") {
			continue
		}
		m := extentLine.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("unparsed extent line %q", line)
		}
		if m[1] != m[2] || m[8] == "" {
			continue // interior node: physical is a single index block
		}
		num := func(s string) uint64 { n, _ := strconv.ParseUint(s, 10, 64); return n }
		exts = append(exts, Extent{
			Logical:  num(m[5]),
			Physical: num(m[7]),
			Len:      num(m[9]),
			Uninit:   strings.Contains(m[10], "Uninit"),
		})
	}
	return exts, nil
}

// hashAlgs maps directory hash names to the numbers debugfs's dx_hash
// takes. debugfs 1.47.0 only knows "legacy", "half_md4" and "tea" by name
// and silently treats any other name as 0 (legacy), so DebugfsHash always
// passes the number.
var hashAlgs = map[string]int{
	"legacy":            0,
	"half_md4":          1,
	"tea":               2,
	"legacy_unsigned":   3,
	"half_md4_unsigned": 4,
	"tea_unsigned":      5,
}

var hashLine = regexp.MustCompile(`^Hash of .* is 0x([0-9a-fA-F]+) \(minor 0x([0-9a-fA-F]+)\)\s*$`)

// DebugfsHash computes the ext4 directory hash of name with debugfs's
// `dx_hash -h ALG [-s SEED] -- "NAME"` (no image needed). hashAlg is one of
// legacy, half_md4, tea and their _unsigned variants (the signedness of
// char in the hash, which images record in the superblock flags); seed is a
// UUID string or "" for none (equivalent to the all-zero seed, for which the
// algorithms use their built-in default). debugfs prints
// "Hash of NAME is 0xHASH (minor 0xMINOR)"; legacy hashes have minor 0.
func DebugfsHash(t testing.TB, hashAlg string, seed string, name string) (hash, minor uint32) {
	t.Helper()
	requireTools(t, "debugfs")
	n, ok := hashAlgs[hashAlg]
	if !ok {
		t.Fatalf("testimg: unknown hash algorithm %q", hashAlg)
	}
	cmd := fmt.Sprintf("dx_hash -h %d", n)
	if seed != "" {
		cmd += " -s " + seed
	}
	// "--" keeps a name starting with '-' from being taken for an option.
	cmd += " -- " + quote(name)
	out, errOut, err := runDebugfs("", cmd)
	if err != nil || debugfsErrors(errOut) != "" {
		t.Fatalf("testimg: debugfs -R %q: %v\n%s", cmd, err, errOut)
	}
	for _, line := range strings.Split(out, "\n") {
		if m := hashLine.FindStringSubmatch(line); m != nil {
			h, _ := strconv.ParseUint(m[1], 16, 32)
			mi, _ := strconv.ParseUint(m[2], 16, 32)
			return uint32(h), uint32(mi)
		}
	}
	t.Fatalf("testimg: debugfs -R %q: no hash in output %q", cmd, out)
	return 0, 0
}

// DebugfsBatch runs every command of cmds in one debugfs process (debugfs
// -f) on img and returns the standard output of each, in order. One process
// for hundreds of commands keeps an oracle walk of a whole image fast.
// Commands that fail leave their output empty; their messages go to
// standard error, which is returned whole as the second result.
func DebugfsBatch(t testing.TB, img string, cmds []string) ([]string, string) {
	t.Helper()
	requireTools(t, "debugfs")
	f, err := os.CreateTemp("", "testimg-debugfs-*.cmd")
	if err != nil {
		t.Fatalf("testimg: %v", err)
	}
	defer os.Remove(f.Name())
	for _, c := range cmds {
		if strings.ContainsAny(c, "\r\n") {
			t.Fatalf("testimg: debugfs command %q spans lines", c)
		}
		fmt.Fprintln(f, c)
	}
	f.Close()
	out, errOut, err := runTool("debugfs", "-f", f.Name(), img)
	if err != nil {
		t.Fatalf("testimg: debugfs -f on %s: %v\n%s", img, err, errOut)
	}
	// debugfs echoes each command as "debugfs: CMD" before its output.
	outs := make([]string, len(cmds))
	i := -1
	for _, line := range strings.SplitAfter(out, "\n") {
		if strings.HasPrefix(line, "debugfs: ") && i+1 < len(cmds) && strings.TrimRight(line[len("debugfs: "):], "\n") == cmds[i+1] {
			i++
			continue
		}
		if i >= 0 {
			outs[i] += line
		}
	}
	if i != len(cmds)-1 {
		t.Fatalf("testimg: debugfs -f on %s: saw %d of %d commands echoed", img, i+1, len(cmds))
	}
	return outs, errOut
}

// DebugfsStats is DebugfsStat for many paths in one debugfs run.
func DebugfsStats(t testing.TB, img string, paths []string) []map[string]string {
	t.Helper()
	cmds := make([]string, len(paths))
	for i, p := range paths {
		cmds[i] = "stat " + debugfsPath(p)
	}
	outs, _ := DebugfsBatch(t, img, cmds)
	stats := make([]map[string]string, len(paths))
	for i, o := range outs {
		stats[i] = parseStat(t, o)
	}
	return stats
}

// DebugfsDumps is DebugfsDump for many paths in one debugfs run.
func DebugfsDumps(t testing.TB, img string, paths []string) [][]byte {
	t.Helper()
	dir := t.TempDir()
	cmds := make([]string, len(paths))
	for i, p := range paths {
		cmds[i] = fmt.Sprintf("dump %s %s", debugfsPath(p), quote(filepath.Join(dir, fmt.Sprint(i))))
	}
	DebugfsBatch(t, img, cmds)
	data := make([][]byte, len(paths))
	for i := range paths {
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprint(i)))
		if err != nil {
			t.Fatalf("testimg: debugfs dump of %s: %v", paths[i], err)
		}
		data[i] = b
	}
	return data
}

// DebugfsExtentsBatch is DebugfsExtents for many paths in one debugfs run;
// files without extents get nil.
func DebugfsExtentsBatch(t testing.TB, img string, paths []string) [][]Extent {
	t.Helper()
	cmds := make([]string, len(paths))
	for i, p := range paths {
		cmds[i] = "ex " + debugfsPath(p)
	}
	outs, _ := DebugfsBatch(t, img, cmds)
	exts := make([][]Extent, len(paths))
	for i, o := range outs {
		e, err := parseExtents(o)
		if err != nil {
			t.Fatalf("testimg: debugfs ex %s: %v\n%s", paths[i], err, o)
		}
		exts[i] = e
	}
	return exts
}
