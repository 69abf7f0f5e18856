//go:build linux

package testimg

import (
	"os"
	"path/filepath"
	"testing"
)

// TestFiemapMatchesDebugfs checks Fiemap on the kernel's mount against an
// independent oracle, debugfs's extent listing of the same image: every
// leaf extent must come back with the same logical and physical byte
// addresses and length (the kernel may merge adjacent extents, which are
// merged on both sides), unwritten ones flagged FiemapExtentUnwritten.
// Then an inline-data file must be one extent flagged
// FiemapExtentDataInline.
func TestFiemapMatchesDebugfs(t *testing.T) {
	RequireKernelMount(t)
	spec := SpecNamed(t, "ext4-default")
	img := Build(t, spec)
	sb, err := readSuperblock(img)
	if err != nil {
		t.Fatal(err)
	}
	bs := uint64(sb.blockSize)
	paths := []string{"files/size-4096", "files/size-5242880", "sparse/pieces", "sparse/scattered", "sparse/prealloc", "files/size-0"}
	want := DebugfsExtentsBatch(t, img, paths)
	type ext struct {
		log, phys, n uint64
		unwritten    bool
	}
	merge := func(in []ext) []ext {
		var out []ext
		for _, e := range in {
			if k := len(out) - 1; k >= 0 && out[k].log+out[k].n == e.log && out[k].phys+out[k].n == e.phys && out[k].unwritten == e.unwritten {
				out[k].n += e.n
				continue
			}
			out = append(out, e)
		}
		return out
	}
	WithKernelMount(t, img, func(mnt string) {
		sawUnwritten := false
		for i, p := range paths {
			f, err := os.Open(filepath.Join(mnt, filepath.FromSlash(p)))
			if err != nil {
				t.Fatal(err)
			}
			got, err := Fiemap(f)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			var g, w []ext
			for j, e := range got {
				if e.Flags&FiemapExtentLast != 0 && j != len(got)-1 {
					t.Errorf("%s: extent %d of %d flagged last", p, j, len(got))
				}
				g = append(g, ext{e.Logical, e.Physical, e.Length, e.Flags&FiemapExtentUnwritten != 0})
				sawUnwritten = sawUnwritten || e.Flags&FiemapExtentUnwritten != 0
			}
			if len(got) > 0 && got[len(got)-1].Flags&FiemapExtentLast == 0 {
				t.Errorf("%s: no extent flagged last", p)
			}
			for _, e := range want[i] {
				w = append(w, ext{e.Logical * bs, e.Physical * bs, e.Len * bs, e.Uninit})
			}
			g, w = merge(g), merge(w)
			if len(g) != len(w) {
				t.Errorf("%s: FIEMAP has %d extents %v, debugfs %d %v", p, len(g), g, len(w), w)
				continue
			}
			for j := range g {
				if g[j] != w[j] {
					t.Errorf("%s: extent %d: FIEMAP %+v, debugfs %+v", p, j, g[j], w[j])
				}
			}
		}
		t.Logf("compared %d files", len(paths))
		if !sawUnwritten {
			t.Errorf("no FIEMAP extent flagged unwritten: sparse/prealloc lost its preallocation?")
		}
	})

	inline := Build(t, SpecNamed(t, "ext4-inline"))
	WithKernelMount(t, inline, func(mnt string) {
		f, err := os.Open(filepath.Join(mnt, "files", "size-59"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		got, err := Fiemap(f)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].Flags&FiemapExtentDataInline == 0 || got[0].Logical != 0 || got[0].Length != 59 {
			t.Errorf("files/size-59 on the inline image: FIEMAP %+v, want one inline extent [0, 59)", got)
		}
	})
}
