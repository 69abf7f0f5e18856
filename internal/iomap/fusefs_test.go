package iomap_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"

	"safefs/internal/ext4"
	"safefs/internal/fusefs"
	"safefs/internal/iomap"
	"safefs/internal/testimg"
)

// TestMatchesFusefs checks that the engine answers SEEK_DATA/SEEK_HOLE
// and READ exactly as internal/fusefs's Lseek and Read do today (the code
// the engine replaces, which was matched against the kernel), for every
// regular file of a few matrix images and of the layout and fuzz images,
// at every probe offset. It needs no root, so it also guards hosts where
// the kernel oracle is skipped.
func TestMatchesFusefs(t *testing.T) {
	imgs := map[string]string{"layout": layoutImage(t)}
	for _, spec := range testimg.Matrix() {
		switch spec.Name {
		case "ext3-1k", "ext4-default", "ext4-inline", "ext4-bigalloc", "ext4-64k":
			imgs[spec.Name] = testimg.Build(t, spec)
		}
	}
	var names []string
	for n := range imgs {
		names = append(names, n)
	}
	sort.Strings(names)
	files, seeks, reads := 0, 0, 0
	for _, name := range names {
		fsys, e := openImage(t, imgs[name])
		srv := fusefs.New(fsys, fusefs.Options{Logf: t.Logf})
		bs := uint64(e.BlockSize())
		r := rand.New(rand.NewPCG(5, 6))
		all := walkFiles(t, fsys)
		var paths []string
		for p := range all {
			paths = append(paths, p)
		}
		sort.Strings(paths)
		for _, p := range paths {
			in := all[p]
			segs, err := engineWalk(e, in)
			if err != nil {
				t.Errorf("%s:%s: %v", name, p, err)
				continue
			}
			files++
			for _, off := range probes(in.Size, bs, segs, r) {
				for _, whence := range []int{iomap.SeekData, iomap.SeekHole} {
					seeks++
					if err := sameSeek(srv, e, in, off, whence); err != nil {
						t.Errorf("%s:%s: %v", name, p, err)
					}
				}
				reads++
				if err := sameRead(srv, e, in, off, 70000); err != nil {
					t.Errorf("%s:%s: %v", name, p, err)
				}
			}
		}
	}
	t.Logf("%d files, %d seeks, %d reads compared with internal/fusefs", files, seeks, reads)
}

func node(in *ext4.Inode) uint64 {
	if in.Ino == 2 {
		return fuse.FUSE_ROOT_ID
	}
	return uint64(in.Ino)
}

func sameSeek(srv *fusefs.FS, e *iomap.Engine, in *ext4.Inode, off uint64, whence int) error {
	var out fuse.LseekOut
	st := srv.Lseek(nil, &fuse.LseekIn{InHeader: fuse.InHeader{NodeId: node(in)}, Offset: off, Whence: uint32(whence)}, &out)
	got, err := e.Seek(in, off, whence)
	switch {
	case st == fuse.Status(syscall.ENXIO):
		if !errors.Is(err, syscall.ENXIO) {
			return fmt.Errorf("seek %d from %d: engine %d, %v; fusefs ENXIO", whence, off, got, err)
		}
	case !st.Ok():
		return fmt.Errorf("seek %d from %d: fusefs %v", whence, off, st)
	case err != nil || got != out.Offset:
		return fmt.Errorf("seek %d from %d: engine %d, %v; fusefs %d", whence, off, got, err, out.Offset)
	}
	return nil
}

func sameRead(srv *fusefs.FS, e *iomap.Engine, in *ext4.Inode, off uint64, n int) error {
	buf := make([]byte, n)
	res, st := srv.Read(nil, &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: node(in)}, Offset: off, Size: uint32(n)}, buf)
	if !st.Ok() {
		return fmt.Errorf("read at %d: fusefs %v", off, st)
	}
	want, st := res.Bytes(make([]byte, n))
	if !st.Ok() {
		return fmt.Errorf("read at %d: fusefs result %v", off, st)
	}
	got := make([]byte, n)
	gn, err := e.ReadAt(in, got, int64(off))
	if err != nil && err != io.EOF || !bytes.Equal(got[:gn], want) {
		return fmt.Errorf("read at %d: engine %d bytes, %v; fusefs %d bytes; equal %v", off, gn, err, len(want), bytes.Equal(got[:min(gn, len(want))], want[:min(gn, len(want))]))
	}
	return nil
}
