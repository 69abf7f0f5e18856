package ext4_test

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"safefs/internal/ext4"
)

// corpusImage is one image of the e2fsprogs test corpus, decompressed.
type corpusImage struct {
	name string
	data []byte
}

// corpusDir finds shared/corpus/e2fsprogs beside the repository (or
// $SAFEFS_CORPUS); "" when absent.
func corpusDir() string {
	if d := os.Getenv("SAFEFS_CORPUS"); d != "" {
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

func corpusNames(dir string) []string {
	var names []string
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		n := e.Name()
		if strings.Contains(n, ".image") {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

func readCorpusImage(path string, maxSize int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	switch {
	case strings.HasSuffix(path, ".gz"):
		z, err := gzip.NewReader(f)
		if err != nil {
			return nil, err
		}
		r = z
	case strings.HasSuffix(path, ".bz2"):
		r = bzip2.NewReader(f)
	}
	data, err := io.ReadAll(io.LimitReader(r, maxSize+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > maxSize {
		return nil, errTooBig
	}
	return data, nil
}

var errTooBig = errors.New("image larger than the limit")

// corpusImages returns the corpus images no larger than maxSize.
func corpusImages(tb testing.TB, maxSize int64) []corpusImage {
	dir := corpusDir()
	if dir == "" {
		return nil
	}
	var out []corpusImage
	for _, n := range corpusNames(dir) {
		data, err := readCorpusImage(filepath.Join(dir, n), maxSize)
		if err != nil {
			continue
		}
		out = append(out, corpusImage{name: n, data: data})
	}
	return out
}

// TestCorpus opens and walks every image of the e2fsprogs corpus: each
// must be refused with an error or walked to the end, with no panic and no
// hang. It prints a table of what happened to each.
func TestCorpus(t *testing.T) {
	dir := corpusDir()
	if dir == "" {
		t.Skip("shared/corpus/e2fsprogs is not beside the repository")
	}
	var table strings.Builder
	fmt.Fprintf(&table, "%-40s %-8s %7s %6s  %s\n", "image", "result", "entries", "errors", "first problem")
	served, refused := 0, 0
	for _, n := range corpusNames(dir) {
		data, err := readCorpusImage(filepath.Join(dir, n), 256<<20)
		if err != nil {
			t.Errorf("%s: %v", n, err)
			continue
		}
		type outcome struct {
			openErr error
			res     walkResult
		}
		done := make(chan outcome, 1)
		go func() {
			fsys, err := ext4.Open(bytes.NewReader(data), &ext4.Options{DeviceSize: int64(len(data)), NoRecovery: true})
			if err != nil {
				done <- outcome{openErr: err}
				return
			}
			done <- outcome{res: walkFS(fsys, defaultLimits)}
		}()
		select {
		case o := <-done:
			name := strings.SplitN(n, ".", 2)[0]
			if o.openErr != nil {
				refused++
				fmt.Fprintf(&table, "%-40s %-8s %7s %6s  %v\n", name, "refused", "-", "-", o.openErr)
				continue
			}
			served++
			first := ""
			if len(o.res.errs) > 0 {
				first = o.res.errs[0].Error()
			}
			fmt.Fprintf(&table, "%-40s %-8s %7d %6d  %s\n", name, "served", len(o.res.entries), len(o.res.errs), first)
		case <-time.After(60 * time.Second):
			t.Fatalf("%s: walk did not finish within 60 s", n)
		}
	}
	t.Logf("corpus: %d served, %d refused\n%s", served, refused, table.String())
}
