package main

import (
	"errors"
	"fmt"
	"io"
	"log"
	"os"

	"safefs/internal/ext4"
	"safefs/internal/fusefs"
	"safefs/internal/journal"
)

// opened is a filesystem ready to serve.
type opened struct {
	fsys *ext4.FS
	// errs logs damage found while serving, once per object; the server
	// shares it.
	errs *fusefs.ErrorLog
	// warnings are for the person mounting (mount.safe prints them).
	warnings []string
	// replayed says the filesystem is served through an in-memory replay
	// of its journal: some of its current blocks are not on the device,
	// so the kernel must not read file data from the device itself
	// (FUSE iomap).
	replayed bool
}

// openFilesystem opens the filesystem on dev (named name in messages) for
// serving: it checks the device's size, reads and validates the
// superblock, and replays a journal that needs recovery in memory (unless
// noRecovery: then it serves the unreplayed state, with a warning). Device reads
// are bounded (fusefs.LimitDevice). direct, if not nil, is the same
// device opened with O_DIRECT, for bulk reads (fusefs.BulkDevice). The
// error is a message for a person: what is wrong with the device and what
// to do about it.
func openFilesystem(name string, raw, direct *os.File, noRecovery bool) (*opened, error) {
	size, err := deviceSize(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	if size < ext4.SuperblockOffset+ext4.SuperblockSize {
		return nil, fmt.Errorf("%s: not an ext2/ext3/ext4 filesystem: %d bytes is too small to hold a superblock", name, size)
	}
	errs := fusefs.NewErrorLog(func(format string, a ...any) { log.Printf(name+": "+format, a...) })
	var bulk io.ReaderAt = raw
	if direct != nil {
		bulk = fusefs.BulkDevice(raw, direct)
	}
	dev := fusefs.LimitDevice(bulk, 0)
	opts := &ext4.Options{
		DeviceSize: size,
		// A journal that needs recovery is dealt with below.
		NoRecovery: true,
		Report:     errs.Report,
	}
	fsys, err := ext4.Open(dev, opts)
	if err != nil {
		return nil, errors.New(explainOpen(name, err))
	}
	o := &opened{fsys: fsys, errs: errs}
	if !fsys.Superblock().NeedsRecovery() {
		return checkRoot(name, o)
	}
	if noRecovery {
		o.warnings = append(o.warnings, "the journal needs recovery and was not replayed (norecovery): recent changes are missing")
		return checkRoot(name, o)
	}
	// Replay the journal in memory, as the kernel's recovery would write
	// it, and serve the filesystem through that overlay: the device is
	// never written.
	res, err := journal.Recover(dev, fsys)
	if err != nil {
		return nil, fmt.Errorf("%s: the filesystem was not cleanly unmounted and its journal cannot be replayed: %v; "+
			"run e2fsck on it, or mount it with -o norecovery to see it without the journal's recent changes", name, err)
	}
	if fsys, err = ext4.Open(res.Overlay(dev), opts); err != nil {
		return nil, errors.New(explainOpen(name, err))
	}
	o.fsys = fsys
	o.replayed = len(res.Blocks) > 0
	log.Printf("%s: replayed %d journal transactions (%d blocks) in memory; the device is not written", name, res.Transactions(), len(res.Blocks))
	return checkRoot(name, o)
}

// checkRoot refuses a filesystem whose root directory cannot be read, as
// the kernel's ext4 refuses to mount one: every path goes through the
// root, so the mount could serve nothing and would only fail every request
// on its own mount point.
func checkRoot(name string, o *opened) (*opened, error) {
	root, err := o.fsys.Inode(2)
	if err == nil && !root.IsDir() {
		err = fmt.Errorf("inode 2 is not a directory (mode 0%o)", root.Mode)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: the root directory is damaged: %v; run e2fsck on it", name, err)
	}
	return o, nil
}
