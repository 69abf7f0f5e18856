package main

import (
	"errors"
	"fmt"
	"log"
	"os"

	"safefs/internal/ext4"
	"safefs/internal/fusefs"
)

// opened is a filesystem ready to serve.
type opened struct {
	fsys *ext4.FS
	// errs logs damage found while serving, once per object; the server
	// shares it.
	errs *fusefs.ErrorLog
	// warnings are for the person mounting (mount.safe prints them).
	warnings []string
}

// openFilesystem opens the filesystem on dev (named name in messages) for
// serving: it checks the device's size, reads and validates the
// superblock, and deals with a journal that needs recovery. Device reads
// are bounded (fusefs.LimitDevice). The error is a message for a person:
// what is wrong with the device and what to do about it.
func openFilesystem(name string, dev *os.File, noRecovery bool) (*opened, error) {
	size, err := deviceSize(dev)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	if size < ext4.SuperblockOffset+ext4.SuperblockSize {
		return nil, fmt.Errorf("%s: not an ext2/ext3/ext4 filesystem: %d bytes is too small to hold a superblock", name, size)
	}
	errs := fusefs.NewErrorLog(func(format string, a ...any) { log.Printf(name+": "+format, a...) })
	fsys, err := ext4.Open(fusefs.LimitDevice(dev, 0), &ext4.Options{
		DeviceSize: size,
		NoRecovery: noRecovery,
		Report:     errs.Report,
	})
	if err != nil {
		return nil, errors.New(explainOpen(name, err))
	}
	o := &opened{fsys: fsys, errs: errs}
	if fsys.Superblock().NeedsRecovery() {
		o.warnings = append(o.warnings, "the journal needs recovery and was not replayed (norecovery): recent changes are missing")
	}
	return o, nil
}
