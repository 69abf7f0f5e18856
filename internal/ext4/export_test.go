package ext4

// Test access to the package's internals, for the external tests.

// CachedInodeBytes returns the bytes of on-disk inode copies the inode
// cache holds.
func CachedInodeBytes(fs *FS) int {
	n := 0
	for i := range fs.inodes.shards {
		s := &fs.inodes.shards[i]
		s.mu.Lock()
		for _, e := range s.items {
			n += len(e.Value.(*lruEntry[uint32, *Inode]).val.raw)
		}
		s.mu.Unlock()
	}
	return n
}
