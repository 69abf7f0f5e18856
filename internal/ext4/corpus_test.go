package ext4_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"safefs/internal/ext4"
	"safefs/internal/testimg"
)

// corpusImage is one image of the e2fsprogs test corpus, decompressed.
type corpusImage struct {
	name string
	data []byte
}

// corpusImages returns the corpus images no larger than maxSize.
func corpusImages(tb testing.TB, maxSize int64) []corpusImage {
	dir := testimg.CorpusDir()
	if dir == "" {
		return nil
	}
	var out []corpusImage
	for _, c := range testimg.CorpusImages(dir) {
		data, err := c.Read(maxSize)
		if err != nil {
			continue
		}
		out = append(out, corpusImage{name: c.Name, data: data})
	}
	return out
}

// TestCorpus opens and walks every image of the e2fsprogs corpus: each
// must be refused with an error or walked to the end, with no panic and no
// hang. It prints a table of what happened to each.
func TestCorpus(t *testing.T) {
	dir := testimg.CorpusDir()
	if dir == "" {
		t.Skip("shared/corpus/e2fsprogs is not beside the repository (or set " + testimg.CorpusEnv + ")")
	}
	var table strings.Builder
	fmt.Fprintf(&table, "%-40s %-8s %7s %6s  %s\n", "image", "result", "entries", "errors", "first problem")
	served, refused := 0, 0
	for _, c := range testimg.CorpusImages(dir) {
		n := c.Name
		data, err := c.Read(256 << 20)
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
			name := n
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
