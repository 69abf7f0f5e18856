// Command ext4ls lists an ext2/ext3/ext4 image through safefs's userspace
// parser, without mounting it: a way to look at what safefsd will serve,
// and a debugging aid in the spirit of debugfs's "ls -l".
//
// Usage: ext4ls [-R] [-x] IMAGE [PATH]
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path"
	"strings"
	"time"

	"safefs/internal/ext4"
)

func main() {
	recursive := flag.Bool("R", false, "list subdirectories recursively")
	xattrs := flag.Bool("x", false, "show extended attributes")
	norecovery := flag.Bool("norecovery", false, "read a filesystem whose journal needs recovery without replaying it")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: ext4ls [-R] [-x] [-norecovery] IMAGE [PATH]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() < 1 || flag.NArg() > 2 {
		flag.Usage()
		os.Exit(2)
	}
	img, p := flag.Arg(0), "/"
	if flag.NArg() == 2 {
		p = flag.Arg(1)
	}
	if err := run(img, p, *recursive, *xattrs, *norecovery); err != nil {
		fmt.Fprintf(os.Stderr, "ext4ls: %s: %v\n", img, err)
		os.Exit(1)
	}
}

func run(img, p string, recursive, xattrs, norecovery bool) error {
	f, err := os.Open(img)
	if err != nil {
		return err
	}
	defer f.Close()
	size, err := f.Seek(0, 2)
	if err != nil {
		return err
	}
	fsys, err := ext4.Open(f, &ext4.Options{DeviceSize: size, NoRecovery: norecovery,
		Report: func(err error) { fmt.Fprintf(os.Stderr, "ext4ls: %s: %v\n", img, err) }})
	if errors.Is(err, ext4.ErrNeedsRecovery) {
		return fmt.Errorf("%w; rerun with -norecovery to see the unreplayed state", err)
	}
	if err != nil {
		return err
	}
	sb := fsys.Superblock()
	fmt.Printf("# %s: %d blocks of %d bytes, features: %s\n", img, sb.BlocksCount, sb.BlockSize(), sb.FeatureString())
	ino, err := resolve(fsys, p)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return list(fsys, ino, p, recursive, xattrs)
}

func resolve(fsys *ext4.FS, p string) (uint32, error) {
	ino := uint32(2)
	for _, part := range strings.Split(strings.Trim(path.Clean(p), "/"), "/") {
		if part == "" {
			continue
		}
		dir, err := fsys.Inode(ino)
		if err != nil {
			return 0, err
		}
		if ino, _, err = fsys.Lookup(dir, []byte(part)); err != nil {
			return 0, err
		}
	}
	return ino, nil
}

func list(fsys *ext4.FS, ino uint32, p string, recursive, xattrs bool) error {
	dir, err := fsys.Inode(ino)
	if err != nil {
		return err
	}
	if !dir.IsDir() {
		show(fsys, dir, p, xattrs)
		return nil
	}
	fmt.Printf("%s:\n", p)
	var subdirs []string
	var subinos []uint32
	err = fsys.ReadDir(dir, 0, func(e ext4.DirEntry) bool {
		name := string(e.Name)
		in, err := fsys.Inode(e.Ino)
		if err != nil {
			fmt.Printf("  %-10s %s: %v\n", "?", name, err)
			return true
		}
		show(fsys, in, name, xattrs)
		if in.IsDir() && name != "." && name != ".." {
			subdirs = append(subdirs, path.Join(p, name))
			subinos = append(subinos, e.Ino)
		}
		return true
	})
	if err != nil {
		return err
	}
	if recursive {
		for i, d := range subdirs {
			fmt.Println()
			if err := list(fsys, subinos[i], d, recursive, xattrs); err != nil {
				fmt.Fprintf(os.Stderr, "ext4ls: %s: %v\n", d, err)
			}
		}
	}
	return nil
}

func show(fsys *ext4.FS, in *ext4.Inode, name string, xattrs bool) {
	mt := time.Unix(in.Mtime.Sec, int64(in.Mtime.Nsec)).UTC().Format("2006-01-02 15:04")
	line := fmt.Sprintf("  %8d %-11s %3d %6d %6d %10d %s %s", in.Ino, in.FileMode(), in.LinksCount, in.Uid, in.Gid, in.Size, mt, name)
	if in.IsSymlink() {
		if t, err := fsys.Readlink(in); err == nil {
			line += " -> " + string(t)
		} else {
			line += " -> ?(" + err.Error() + ")"
		}
	}
	fmt.Println(line)
	if xattrs {
		names, err := fsys.ListXattrs(in)
		if err != nil {
			fmt.Printf("      xattrs: %v\n", err)
		}
		for _, n := range names {
			v, err := fsys.GetXattr(in, n)
			if err != nil {
				fmt.Printf("      %s: %v\n", n, err)
			} else {
				fmt.Printf("      %s (%d bytes)\n", n, len(v))
			}
		}
	}
}
