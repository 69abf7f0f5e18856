package iomap_test

import (
	"safefs/internal/testimg"

	"io"
	"math/rand/v2"
	"testing"
)

// BenchmarkMap maps the layout image's fragmented file (about 2,000
// scattered one-block extents in a two-level tree, then a contiguous
// tail): one block at a time in order and at random, as the kernel's
// requests would; the whole file per op (every mapping merged as far as it
// goes); and the 40 MiB contiguous file of two extents in one mapping.
func BenchmarkMap(b *testing.B) {
	fsys, e := openImage(b, testimg.LayoutImage(b))
	frag := resolve(b, fsys, "frag")
	bs := uint64(e.BlockSize())
	nblocks := frag.Size / bs
	b.Run("frag-sequential", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := e.Map(frag, uint64(i)%nblocks*bs, bs); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("frag-random", func(b *testing.B) {
		r := rand.New(rand.NewPCG(1, 1))
		for i := 0; i < b.N; i++ {
			if _, err := e.Map(frag, r.Uint64N(frag.Size), 128<<10); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("frag-whole-file", func(b *testing.B) {
		n := 0
		for i := 0; i < b.N; i++ {
			for pos := uint64(0); pos < frag.Size; {
				m, err := e.Map(frag, pos, frag.Size-pos)
				if err != nil {
					b.Fatal(err)
				}
				pos = m.End()
				n++
			}
		}
		b.ReportMetric(float64(n)/float64(b.N), "mappings/op")
	})
	contig := resolve(b, fsys, "contig")
	b.Run("contig-whole-file", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if m, err := e.Map(contig, 0, contig.Size); err != nil || m.Length != contig.Size {
				b.Fatal(m, err)
			}
		}
	})
}

// BenchmarkReadAt reads the fragmented and the contiguous file in 128 KiB
// requests (the kernel's usual FUSE READ size with read-ahead), through
// the engine and, for comparison, through internal/ext4's reader.
func BenchmarkReadAt(b *testing.B) {
	fsys, e := openImage(b, testimg.LayoutImage(b))
	buf := make([]byte, 128<<10)
	for _, name := range []string{"frag", "contig"} {
		in := resolve(b, fsys, name)
		for _, r := range []struct {
			name string
			read func(p []byte, off int64) (int, error)
		}{
			{"engine", func(p []byte, off int64) (int, error) { return e.ReadAt(in, p, off) }},
			{"ext4", func(p []byte, off int64) (int, error) { return fsys.ReadAt(in, p, off) }},
		} {
			b.Run(name+"-"+r.name, func(b *testing.B) {
				b.SetBytes(int64(len(buf)))
				off := int64(0)
				for i := 0; i < b.N; i++ {
					if _, err := r.read(buf, off); err != nil && err != io.EOF {
						b.Fatal(err)
					}
					if off += int64(len(buf)); off >= int64(in.Size) {
						off = 0
					}
				}
			})
		}
	}
}
