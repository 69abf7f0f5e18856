package testimg

import (
	"compress/bzip2"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// The e2fsprogs corpus: damaged filesystems from e2fsprogs' own tests,
// which nobody on this project wrote. It is not part of the repository;
// tests look for it beside the repository (../shared/corpus/e2fsprogs) or
// where CorpusEnv points, and skip when it is absent.

// CorpusEnv names the environment variable that, when set, is the corpus
// directory.
const CorpusEnv = "SAFEFS_CORPUS"

// CorpusDir returns the corpus directory: $SAFEFS_CORPUS, else
// ../shared/corpus/e2fsprogs beside the repository holding the current
// directory (go test runs in the package's directory). "" when absent.
func CorpusDir() string {
	if d := os.Getenv(CorpusEnv); d != "" {
		return d
	}
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for ; dir != "/" && dir != "."; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			c := filepath.Join(dir, "..", "shared", "corpus", "e2fsprogs")
			if st, err := os.Stat(c); err == nil && st.IsDir() {
				return c
			}
			return ""
		}
	}
	return ""
}

// CorpusImage is one image of the corpus, still compressed.
type CorpusImage struct {
	// Name is the case's name, the file name up to ".image"
	// (f_baddir, j_corrupt_commit_csum, ...).
	Name string
	// Path is the file: NAME.image, NAME.image.gz or NAME.image.bz2.
	Path string
}

// CorpusImages lists the images of the corpus in dir, sorted by name,
// one per case.
func CorpusImages(dir string) []CorpusImage {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	seen := map[string]bool{}
	var out []CorpusImage
	for _, e := range ents {
		n := e.Name()
		i := strings.Index(n, ".image")
		if i < 0 || seen[n[:i]] {
			continue
		}
		seen[n[:i]] = true
		out = append(out, CorpusImage{Name: n[:i], Path: filepath.Join(dir, n)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// ErrCorpusTooBig is returned for an image that decompresses to more than
// the limit given.
var ErrCorpusTooBig = errors.New("testimg: corpus image larger than the limit")

// Open returns the decompressed image as a stream; the caller closes it.
func (c CorpusImage) Open() (io.ReadCloser, error) {
	f, err := os.Open(c.Path)
	if err != nil {
		return nil, err
	}
	switch {
	case strings.HasSuffix(c.Path, ".gz"):
		z, err := gzip.NewReader(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: %v", c.Path, err)
		}
		return struct {
			io.Reader
			io.Closer
		}{z, f}, nil
	case strings.HasSuffix(c.Path, ".bz2"):
		return struct {
			io.Reader
			io.Closer
		}{bzip2.NewReader(f), f}, nil
	}
	return f, nil
}

// Read returns the decompressed image, or ErrCorpusTooBig if it is larger
// than maxSize bytes.
func (c CorpusImage) Read(maxSize int64) ([]byte, error) {
	r, err := c.Open()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	data, err := io.ReadAll(io.LimitReader(r, maxSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %v", c.Path, err)
	}
	if int64(len(data)) > maxSize {
		return nil, ErrCorpusTooBig
	}
	return data, nil
}

// WriteFile decompresses the image into the file path (at most maxSize
// bytes; ErrCorpusTooBig beyond).
func (c CorpusImage) WriteFile(path string, maxSize int64) error {
	r, err := c.Open()
	if err != nil {
		return err
	}
	defer r.Close()
	w, err := os.Create(path)
	if err != nil {
		return err
	}
	n, err := io.Copy(w, io.LimitReader(r, maxSize+1))
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s: %v", c.Path, err)
	}
	if n > maxSize {
		return ErrCorpusTooBig
	}
	return nil
}
