//go:build linux

package testimg

import (
	"encoding/binary"
	"fmt"
	"os"
	"syscall"
	"testing"
	"unsafe"
)

// FiemapExtent is one extent as the kernel reports it with FS_IOC_FIEMAP:
// Length bytes of the file from byte Logical are stored at device byte
// Physical. Flags are FIEMAP_EXTENT_* bits (FiemapExtent*).
type FiemapExtent struct {
	Logical, Physical, Length uint64
	Flags                     uint32
}

// FIEMAP_EXTENT_* flags (linux/fiemap.h).
const (
	FiemapExtentLast          = 0x00000001 // last extent of the file
	FiemapExtentUnknown       = 0x00000002 // data location unknown
	FiemapExtentDelalloc      = 0x00000004 // location still pending
	FiemapExtentEncoded       = 0x00000008 // data cannot be read while the fs is unmounted
	FiemapExtentDataEncrypted = 0x00000080
	FiemapExtentNotAligned    = 0x00000100 // offsets not block aligned
	FiemapExtentDataInline    = 0x00000200 // data mixed with metadata (ext4 inline data)
	FiemapExtentDataTail      = 0x00000400
	FiemapExtentUnwritten     = 0x00000800 // allocated but reads as zeros
	FiemapExtentMerged        = 0x00001000 // not a real extent: the fs merged blocks
	FiemapExtentShared        = 0x00002000
)

const (
	fsIocFiemap      = 0xC020660B // _IOWR('f', 11, struct fiemap)
	fiemapHeaderSize = 32         // struct fiemap without fm_extents
	fiemapExtentSize = 56         // struct fiemap_extent
	fiemapBatch      = 256        // extents asked for per ioctl
)

// Fiemap returns every extent of the open file f as FS_IOC_FIEMAP reports
// it, from offset 0 to the extent flagged FiemapExtentLast, including
// extents past the end of file (ext4 reports preallocated space there).
// It asks in batches, continuing after the last extent returned. No
// FIEMAP_FLAG_SYNC: the oracle images are mounted read-only, so nothing is
// waiting for writeback.
func Fiemap(f *os.File) ([]FiemapExtent, error) {
	var out []FiemapExtent
	buf := make([]byte, fiemapHeaderSize+fiemapBatch*fiemapExtentSize)
	le := binary.LittleEndian
	start := uint64(0)
	for {
		clear(buf)
		le.PutUint64(buf[0:], start)      // fm_start
		le.PutUint64(buf[8:], ^uint64(0)) // fm_length: to the end
		le.PutUint32(buf[16:], 0)         // fm_flags
		le.PutUint32(buf[24:], fiemapBatch)
		_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), fsIocFiemap, uintptr(unsafe.Pointer(&buf[0])))
		if errno != 0 {
			return nil, fmt.Errorf("FS_IOC_FIEMAP on %s from %d: %w", f.Name(), start, errno)
		}
		n := le.Uint32(buf[20:]) // fm_mapped_extents
		if n > fiemapBatch {
			return nil, fmt.Errorf("FS_IOC_FIEMAP on %s: %d extents for a buffer of %d", f.Name(), n, fiemapBatch)
		}
		if n == 0 {
			return out, nil
		}
		for i := 0; i < int(n); i++ {
			e := buf[fiemapHeaderSize+i*fiemapExtentSize:]
			out = append(out, FiemapExtent{
				Logical:  le.Uint64(e[0:]),
				Physical: le.Uint64(e[8:]),
				Length:   le.Uint64(e[16:]),
				Flags:    le.Uint32(e[40:]),
			})
		}
		last := out[len(out)-1]
		if last.Flags&FiemapExtentLast != 0 {
			return out, nil
		}
		next := last.Logical + last.Length
		if next <= start {
			return nil, fmt.Errorf("FS_IOC_FIEMAP on %s: no progress past %d", f.Name(), start)
		}
		start = next
	}
}

// WithKernelMount mounts img read-only with the kernel's ext4 driver,
// exactly as KernelWalk does (loop device attached read-only, -o ro, plus
// noload with a journal), runs fn with the mount point, and unmounts and
// detaches before returning, also when fn fails the test. It skips the
// test without root or loop devices. It is for oracles that need more
// than KernelWalk's Entry model, such as FIEMAP and reads at chosen
// offsets.
func WithKernelMount(t testing.TB, img string, fn func(mnt string)) {
	t.Helper()
	withMount(t, img, false, fn)
}
