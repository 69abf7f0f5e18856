package hostile

import (
	"path/filepath"
	"testing"

	"safefs/internal/testimg"
	"safefs/internal/testmount"
)

// TestCorpus mounts every image of the e2fsprogs corpus through
// mount.safe and walks it (see mountAndWalk for what must hold), then
// prints a table of what was served and refused.
func TestCorpus(t *testing.T) {
	dir := testimg.CorpusDir()
	if dir == "" {
		t.Skip("no e2fsprogs corpus beside the repository (../shared/corpus/e2fsprogs) and $" + testimg.CorpusEnv + " unset")
	}
	testmount.Require(t)
	t.Parallel()
	svc := testmount.NewService(t)
	tmp := t.TempDir()
	var rows []row
	served := 0
	for _, c := range testimg.CorpusImages(dir) {
		img := filepath.Join(tmp, c.Name+".img")
		if err := c.WriteFile(img, 1<<30); err != nil {
			t.Errorf("%s: %v", c.Name, err)
			continue
		}
		r := mountAndWalk(t, svc, c.Name, img, defaultLimits)
		if r.served {
			served++
		}
		rows = append(rows, r)
	}
	t.Logf("e2fsprogs corpus: %d images, %d served, %d refused\n%s", len(rows), served, len(rows)-served, table(rows))
}
