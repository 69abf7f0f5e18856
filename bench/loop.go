//go:build linux

package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// loopDev is a read-only loop device with direct I/O over the image, the
// equivalent of `losetup --direct-io=on -r -f IMAGE`, with autoclear set:
// the device detaches itself once nothing holds it, so it cannot outlive
// the benchmark even if the benchmark is killed.
type loopDev struct {
	path string
	file *os.File // held open until close; with autoclear this keeps it attached
	// readAheadKB is the device's read-ahead as attached (the kernel's
	// default). mount.safe raises the read-ahead of the bdi it finds
	// behind the mount point, which for a fuseblk mount is the loop
	// device's own, so it is put back before every mount.
	readAheadKB string
}

// attachLoop sets up a loop device over img.
func attachLoop(img string) (*loopDev, error) {
	// O_DIRECT on the backing file is what losetup --direct-io=on does.
	backing, err := os.OpenFile(img, os.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("loop device: opening the image: %w", err)
	}
	defer backing.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("loop device: %w", err)
	}
	defer ctl.Close()

	// Another process may take the free device between GET_FREE and
	// CONFIGURE (EBUSY): try the next one.
	var lastErr error
	for attempt := 0; attempt < 20; attempt++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("loop device: LOOP_CTL_GET_FREE: %w", err)
		}
		path := fmt.Sprintf("/dev/loop%d", n)
		dev, err := openLoopNode(path)
		if err != nil {
			return nil, fmt.Errorf("loop device: %w", err)
		}
		cfg := unix.LoopConfig{Fd: uint32(backing.Fd()), Size: 512}
		cfg.Info.Flags = unix.LO_FLAGS_READ_ONLY | unix.LO_FLAGS_DIRECT_IO | unix.LO_FLAGS_AUTOCLEAR
		copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], img)
		err = unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
		if errors.Is(err, unix.EBUSY) {
			dev.Close()
			lastErr = err
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if err != nil {
			dev.Close()
			return nil, fmt.Errorf("loop device: LOOP_CONFIGURE %s: %w", path, err)
		}
		l := &loopDev{path: path, file: dev}
		if dio := l.sysfs("loop/dio"); dio != "1" {
			l.close()
			return nil, fmt.Errorf("loop device %s: direct I/O did not take (loop/dio = %q)", path, dio)
		}
		if ro := l.sysfs("ro"); ro != "1" {
			l.close()
			return nil, fmt.Errorf("loop device %s: not read-only (ro = %q)", path, ro)
		}
		l.readAheadKB = l.sysfs("queue/read_ahead_kb")
		if _, err := strconv.Atoi(l.readAheadKB); err != nil {
			l.close()
			return nil, fmt.Errorf("loop device %s: read_ahead_kb: %s", path, l.readAheadKB)
		}
		return l, nil
	}
	return nil, fmt.Errorf("loop device: no free device after 20 attempts: %w", lastErr)
}

// openLoopNode opens /dev/loopN, waiting briefly for udev-less systems
// where LOOP_CTL_GET_FREE has just created it.
func openLoopNode(path string) (*os.File, error) {
	var err error
	for i := 0; i < 100; i++ {
		var f *os.File
		if f, err = os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
			return f, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil, err
}

// sysfs reads /sys/block/loopN/<name>.
func (l *loopDev) sysfs(name string) string {
	b, err := os.ReadFile("/sys/block/" + strings.TrimPrefix(l.path, "/dev/") + "/" + name)
	if err != nil {
		return "error: " + err.Error()
	}
	return strings.TrimSpace(string(b))
}

// resetReadAhead puts the device's read-ahead back to what it was when
// attached.
func (l *loopDev) resetReadAhead() error {
	p := "/sys/block/" + strings.TrimPrefix(l.path, "/dev/") + "/queue/read_ahead_kb"
	if err := os.WriteFile(p, []byte(l.readAheadKB), 0); err != nil {
		return fmt.Errorf("loop device: resetting read-ahead: %w", err)
	}
	return nil
}

// close lets the device go: with autoclear it detaches as soon as no
// mount holds it either.
func (l *loopDev) close() error {
	if l.file == nil {
		return nil
	}
	err := l.file.Close()
	l.file = nil
	return err
}
