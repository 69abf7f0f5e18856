//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"safefs/internal/testimg"
)

// Paths inside the benchmark image.
const (
	bigPath    = "big.bin"    // the random-data file
	sparsePath = "sparse.bin" // the sparse file
	smallDir   = "small"      // small/dNN/fNNNNN: the small files
	largeDir   = "largedir"   // the directory with many entries
)

// imageSpec describes the benchmark image. Every field goes into the cache
// key, so changing one builds a new image.
type imageSpec struct {
	BigMiB       int    // random-data file, MiB
	SmallFiles   int    // number of small files
	SmallDirs    int    // directories they are spread over
	SmallMinKiB  int    // smallest small file, KiB
	SmallMaxKiB  int    // largest small file, KiB
	LargeDir     int    // entries (empty files) in the large directory
	SparseMiB    int    // apparent size of the sparse file, MiB
	SparseChunks int    // 64 KiB data chunks scattered over it
	Seed         uint64 // seed of all random choices and data
}

// imageFormat is bumped whenever the way an image is built changes, so that
// a cached image of an older format is not reused.
const imageFormat = 1

// sparseChunk is the size of each data run in the sparse file.
const sparseChunk = 64 << 10

func defaultImageSpec() imageSpec {
	return imageSpec{
		BigMiB: 512, SmallFiles: 10000, SmallDirs: 20, SmallMinKiB: 1, SmallMaxKiB: 16,
		LargeDir: 20000, SparseMiB: 1024, SparseChunks: 256, Seed: 1,
	}
}

func (s imageSpec) check() error {
	switch {
	case s.BigMiB < 1:
		return fmt.Errorf("-big-mib %d: need at least 1", s.BigMiB)
	case s.SmallFiles < 1 || s.SmallDirs < 1:
		return fmt.Errorf("-small-files %d, -small-dirs %d: need at least one of each", s.SmallFiles, s.SmallDirs)
	case s.SmallMinKiB < 1 || s.SmallMaxKiB < s.SmallMinKiB:
		return fmt.Errorf("small file sizes %d..%d KiB: invalid range", s.SmallMinKiB, s.SmallMaxKiB)
	case s.LargeDir < 1:
		return fmt.Errorf("-large-dir %d: need at least 1", s.LargeDir)
	case s.SparseMiB < 1 || s.SparseChunks < 1:
		return fmt.Errorf("-sparse-mib %d, -sparse-chunks %d: need at least 1 each", s.SparseMiB, s.SparseChunks)
	}
	return nil
}

// key names the cached image.
func (s imageSpec) key() string {
	return fmt.Sprintf("f%d-big%d-small%dx%d-%d-%dk-dir%d-sparse%dx%d-seed%d", imageFormat,
		s.BigMiB, s.SmallFiles, s.SmallDirs, s.SmallMinKiB, s.SmallMaxKiB, s.LargeDir, s.SparseMiB, s.SparseChunks, s.Seed)
}

// manifest is what the image holds, recorded from the source tree when the
// image is built; each mount's contents are checked against it.
type manifest struct {
	Spec            imageSpec
	ImageMiB        int
	BigSize         int64
	BigSHA256       string
	SparseSize      int64
	SparseSHA256    string
	SmallBytes      int64
	SmallDigest     string // treeDigest of small/
	LargeDirEntries int
}

// describe is a one-line summary for the table's preface.
func (m *manifest) describe() string {
	return fmt.Sprintf("ext4, 4 KiB blocks, %d MiB; %d MiB random file, %d small files (%d–%d KiB, %.0f MiB) in %d directories, "+
		"a %d-entry htree directory, a %d MiB sparse file with %d×64 KiB of data",
		m.ImageMiB, m.Spec.BigMiB, m.Spec.SmallFiles, m.Spec.SmallMinKiB, m.Spec.SmallMaxKiB, float64(m.SmallBytes)/(1<<20),
		m.Spec.SmallDirs, m.LargeDirEntries, m.Spec.SparseMiB, m.Spec.SparseChunks)
}

// ensureImage returns the cached image for spec, building it first if the
// cache does not have it.
func ensureImage(ctx context.Context, cacheDir string, spec imageSpec, logf func(string, ...any)) (string, *manifest, error) {
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", nil, fmt.Errorf("image cache: %w", err)
	}
	// One builder at a time per cache directory.
	lock, err := os.OpenFile(filepath.Join(cacheDir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", nil, fmt.Errorf("image cache: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", nil, fmt.Errorf("image cache: locking %s: %w", lock.Name(), err)
	}

	key := spec.key()
	img := filepath.Join(cacheDir, key+".img")
	manPath := filepath.Join(cacheDir, key+".json")
	if man, err := readManifest(manPath); err == nil && man.Spec == spec {
		if _, err := os.Stat(img); err == nil {
			logf("using cached image %s", img)
			return img, man, nil
		}
	}
	logf("building image %s (once; cached for later runs)", img)
	man, err := buildImage(ctx, cacheDir, img, spec, logf)
	if err != nil {
		return "", nil, err
	}
	data, err := json.MarshalIndent(man, "", "\t")
	if err != nil {
		return "", nil, fmt.Errorf("manifest: %w", err)
	}
	if err := os.WriteFile(manPath+".tmp", data, 0o644); err != nil {
		return "", nil, fmt.Errorf("manifest: %w", err)
	}
	if err := os.Rename(manPath+".tmp", manPath); err != nil {
		return "", nil, fmt.Errorf("manifest: %w", err)
	}
	return img, man, nil
}

func readManifest(path string) (*manifest, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var m manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &m, nil
}

// buildImage generates the source tree, makes the image from it with
// mke2fs -d, turns the directories into htrees with e2fsck -fyD, checks
// that the large directory is indexed, and moves the image into place.
func buildImage(ctx context.Context, cacheDir, img string, spec imageSpec, logf func(string, ...any)) (*manifest, error) {
	work, err := os.MkdirTemp(cacheDir, "build-")
	if err != nil {
		return nil, fmt.Errorf("image build: %w", err)
	}
	defer os.RemoveAll(work)
	src := filepath.Join(work, "src")
	logf("generating the source tree in %s", src)
	man, err := generateTree(ctx, src, spec)
	if err != nil {
		return nil, fmt.Errorf("image build: generating the source tree: %w", err)
	}
	man.ImageMiB = imageSizeMiB(spec, man)

	conf := filepath.Join(work, "mke2fs.conf")
	if err := os.WriteFile(conf, []byte(testimg.MkfsConfig), 0o644); err != nil {
		return nil, fmt.Errorf("image build: %w", err)
	}
	tmpImg := filepath.Join(work, "image")
	logf("mke2fs -d (%d MiB)", man.ImageMiB)
	if _, err := runTool(ctx, []string{"MKE2FS_CONFIG=" + conf}, "mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096",
		"-U", testimg.UUID, "-E", "hash_seed="+testimg.HashSeed, "-L", "safefs-bench",
		"-d", src, tmpImg, fmt.Sprintf("%dM", man.ImageMiB)); err != nil {
		return nil, fmt.Errorf("image build: %w", err)
	}
	// mke2fs -d writes linear directories; e2fsck -D indexes them. Exit
	// status 1 means "errors corrected", which -D always reports.
	logf("e2fsck -fyD")
	if out, err := runTool(ctx, nil, "e2fsck", "-fyD", tmpImg); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			return nil, fmt.Errorf("image build: %w\n%s", err, out)
		}
	}
	if out, err := runTool(ctx, nil, "e2fsck", "-fn", tmpImg); err != nil {
		return nil, fmt.Errorf("image build: the image is not clean after e2fsck -fyD: %w\n%s", err, out)
	}
	out, err := runTool(ctx, nil, "debugfs", "-R", "htree /"+largeDir, tmpImg)
	if err != nil || !strings.Contains(out, "Root node dump") {
		return nil, fmt.Errorf("image build: /%s is not an htree after e2fsck -fyD (debugfs htree: %v)\n%s", largeDir, err, firstLines(out, 5))
	}
	if err := os.Rename(tmpImg, img); err != nil {
		return nil, fmt.Errorf("image build: %w", err)
	}
	return man, nil
}

// imageSizeMiB is a file system size with room for the data, its metadata,
// the journal and enough inodes (one per 16 KiB with MkfsConfig).
func imageSizeMiB(spec imageSpec, man *manifest) int {
	data := man.BigSize + int64(spec.SparseChunks)*sparseChunk + man.SmallBytes + int64(spec.SmallFiles)*4096 +
		int64(spec.LargeDir)*64
	mib := int(data*5/4>>20) + 160
	inodes := spec.SmallFiles + spec.SmallDirs + spec.LargeDir + 64
	if need := inodes * 2 * 16384 >> 20; mib < need {
		mib = need
	}
	return mib
}

// runTool runs a program and returns its combined output; the error names
// the command and includes the output.
func runTool(ctx context.Context, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, firstLines(out.String(), 20))
	}
	return out.String(), nil
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(strings.TrimSpace(s), "\n", n+1)
	if len(lines) > n {
		lines = append(lines[:n], "...")
	}
	return strings.Join(lines, "\n")
}

// generateTree writes the source tree for spec into dir and returns its
// manifest (without ImageMiB). Data comes from a ChaCha8 stream seeded by
// spec.Seed, so the tree is the same every time.
func generateTree(ctx context.Context, dir string, spec imageSpec) (*manifest, error) {
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], spec.Seed)
	data := rand.NewChaCha8(seed)
	choice := rand.New(rand.NewPCG(spec.Seed, 0x5afef5))
	man := &manifest{Spec: spec}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}

	// The random-data file.
	buf := make([]byte, 1<<20)
	h := sha256.New()
	f, err := os.Create(filepath.Join(dir, bigPath))
	if err != nil {
		return nil, err
	}
	for i := 0; i < spec.BigMiB; i++ {
		if err := ctx.Err(); err != nil {
			f.Close()
			return nil, err
		}
		data.Read(buf)
		h.Write(buf)
		if _, err := f.Write(buf); err != nil {
			f.Close()
			return nil, err
		}
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	man.BigSize = int64(spec.BigMiB) << 20
	man.BigSHA256 = hex.EncodeToString(h.Sum(nil))

	// The small files, round-robin over the directories.
	for d := 0; d < spec.SmallDirs; d++ {
		if err := os.MkdirAll(filepath.Join(dir, smallDir, fmt.Sprintf("d%02d", d)), 0o755); err != nil {
			return nil, err
		}
	}
	for i := 0; i < spec.SmallFiles; i++ {
		if i%1000 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		size := (spec.SmallMinKiB << 10) + choice.IntN((spec.SmallMaxKiB-spec.SmallMinKiB)<<10+1)
		data.Read(buf[:size])
		p := filepath.Join(dir, smallDir, fmt.Sprintf("d%02d", i%spec.SmallDirs), fmt.Sprintf("f%05d", i))
		if err := os.WriteFile(p, buf[:size], 0o644); err != nil {
			return nil, err
		}
		man.SmallBytes += int64(size)
	}
	if man.SmallDigest, _, err = treeDigest(ctx, filepath.Join(dir, smallDir)); err != nil {
		return nil, err
	}

	// The large directory: empty files with names of a typical length.
	if err := os.MkdirAll(filepath.Join(dir, largeDir), 0o755); err != nil {
		return nil, err
	}
	for i := 0; i < spec.LargeDir; i++ {
		f, err := os.Create(filepath.Join(dir, largeDir, fmt.Sprintf("entry-%06d.dat", i)))
		if err != nil {
			return nil, err
		}
		f.Close()
	}
	man.LargeDirEntries = spec.LargeDir

	// The sparse file: 64 KiB chunks at random 4 KiB-aligned offsets, the
	// last one ending at the end of the file.
	size := int64(spec.SparseMiB) << 20
	f, err = os.Create(filepath.Join(dir, sparsePath))
	if err != nil {
		return nil, err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return nil, err
	}
	for i := 0; i < spec.SparseChunks; i++ {
		off := size - sparseChunk
		if i < spec.SparseChunks-1 && size > sparseChunk {
			off = choice.Int64N((size-sparseChunk)/4096+1) * 4096
		}
		data.Read(buf[:sparseChunk])
		if _, err := f.WriteAt(buf[:sparseChunk], off); err != nil {
			f.Close()
			return nil, err
		}
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	man.SparseSize = size
	if man.SparseSHA256, err = fileSHA256(ctx, filepath.Join(dir, sparsePath)); err != nil {
		return nil, err
	}
	return man, nil
}

// fileSHA256 hashes a file's contents.
func fileSHA256(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, ctxReader{ctx, f}); err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ctxReader stops a copy once its context is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// treeDigest hashes a tree: each regular file's relative path, size and
// content hash, in path order. It also returns the number of files.
func treeDigest(ctx context.Context, root string) (string, int, error) {
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			files = append(files, p)
		}
		return ctx.Err()
	})
	if err != nil {
		return "", 0, err
	}
	sort.Strings(files)
	outer := sha256.New()
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			return "", 0, err
		}
		rel, _ := filepath.Rel(root, p)
		sum := sha256.Sum256(data)
		fmt.Fprintf(outer, "%s\x00%d\x00%x\n", rel, len(data), sum)
	}
	return hex.EncodeToString(outer.Sum(nil)), len(files), nil
}
