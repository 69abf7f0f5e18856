package iomap_test

import (
	"os"
	"strings"
	"testing"

	"safefs/internal/ext4"
	"safefs/internal/iomap"
	"safefs/internal/testimg"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testimg.Cleanup()
	os.Exit(code)
}

// openImage opens img with internal/ext4 and returns an engine on it, the
// device being the image file itself.
func openImage(tb testing.TB, img string) (*ext4.FS, *iomap.Engine) {
	tb.Helper()
	f, err := os.Open(img)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Close() })
	st, err := f.Stat()
	if err != nil {
		tb.Fatal(err)
	}
	fsys, err := ext4.Open(f, &ext4.Options{DeviceSize: st.Size()})
	if err != nil {
		tb.Fatalf("%s: %v", img, err)
	}
	return fsys, iomap.New(fsys, f)
}

// resolve looks up a "/"-separated path from the root.
func resolve(tb testing.TB, fsys *ext4.FS, p string) *ext4.Inode {
	tb.Helper()
	in, err := fsys.Inode(2)
	for _, part := range strings.Split(p, "/") {
		if err != nil {
			break
		}
		if part == "" {
			continue
		}
		var ino uint32
		if ino, _, err = fsys.Lookup(in, []byte(part)); err == nil {
			in, err = fsys.Inode(ino)
		}
	}
	if err != nil {
		tb.Fatalf("%s: %v", p, err)
	}
	return in
}
