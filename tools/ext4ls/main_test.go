package main

import (
	"io"
	"os"
	"strings"
	"testing"

	"safefs/internal/testimg"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testimg.Cleanup()
	os.Exit(code)
}

// TestListsImage lists a small image recursively and checks that every
// name of its tree, a symlink target and an xattr-free listing appear.
func TestListsImage(t *testing.T) {
	img := testimg.Build(t, testimg.Spec{Name: "ext4ls", MkfsArgs: []string{"-t", "ext4"}, SizeMB: 16, Tree: testimg.TreeSmall})
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	runErr := run(img, "/", true, true, false)
	os.Stdout = stdout
	w.Close()
	out, _ := io.ReadAll(r)
	if runErr != nil {
		t.Fatalf("run: %v", runErr)
	}
	for _, want := range []string{"hello.txt", "dir", "data", "empty", "link -> hello.txt", "sparse", "/dir:"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("listing lacks %q:\n%s", want, out)
		}
	}
	if err := run(img, "/no/such/path", false, false, false); err == nil {
		t.Errorf("listing a missing path succeeded")
	}
}
