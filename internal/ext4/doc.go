// Package ext4 reads ext2, ext3 and ext4 filesystems from an io.ReaderAt.
//
// It owns the on-disk format: the superblock and group descriptors, inodes,
// extent trees and indirect block maps, directories (linear, htree and
// inline), extended attributes and POSIX ACLs, and the checksums that guard
// them. It performs no I/O other than reads of the device it was given, and it
// knows nothing of FUSE.
//
// Every byte read from the device is treated as hostile: offsets, lengths,
// counts and depths are checked before use, loops are bounded, and a damaged
// object yields a *CorruptError for that object alone, so the rest of the
// filesystem stays readable. Opening is lazy: the cost of Open does not grow
// with the size of the filesystem.
//
// An *FS is safe for concurrent use. Parsed metadata lives in bounded caches.
package ext4
