// Package fusefs serves an internal/ext4 filesystem read-only through
// go-fuse's raw FUSE API: ext4 objects to FUSE replies, and the caching
// policy.
//
// The FUSE node ID of an object is its ext4 inode number (the FUSE root,
// node 1, is ext4's root inode 2; inode 1, the bad-blocks inode, is never
// exposed), its generation is i_generation, and st_ino is the inode
// number, so hard links share one node and one st_ino exactly as on the
// kernel's own ext4 mount. Because every node ID can be resolved from the
// filesystem alone, the server keeps no per-node table: FORGET has nothing
// to release, and memory does not grow with the number of objects the
// kernel has looked up.
//
// File data comes from internal/iomap's mappings: READ and
// SEEK_DATA/SEEK_HOLE are answered from them, and when the kernel offers
// FUSE iomap (and the mount is a fuseblk mount, so that the block device
// has a cookie), regular files are marked FUSE_ATTR_IOMAP and the kernel
// asks for the mappings (FUSE_IOMAP_BEGIN) and reads the device itself.
// go-fuse does not know the iomap opcodes, so the server's /dev/fuse loop
// is internal/fuseloop, which answers them here and hands everything else
// to go-fuse.
//
// The server never mounts anything. It serves a /dev/fuse descriptor that a
// privileged helper opened and mounted;
// the helper puts the mount options (allow_other, default_permissions,
// max_read, ro) into the mount itself. See Serve and NewServer.
//
// Caching policy. The filesystem cannot change while it is served: the
// mount is read-only and the device is held exclusively by the helper. So
// entries, negative entries and attributes are given long timeouts, file
// data and directory listings stay in the kernel's page cache across opens
// (keep_cache, cache_dir), symlink targets are cached, and the kernel is
// told not to invalidate data on its own. The only cost of a long timeout
// on an immutable filesystem is memory, which the kernel reclaims as it
// needs.
package fusefs
