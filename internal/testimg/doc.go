// Package testimg builds ext2/ext3/ext4 test images from generated trees with
// mke2fs, and reads them back through oracles (the kernel's ext4 mount and
// debugfs) so that a reader of the format can be compared field by field.
//
// The flow for a reader's test is:
//
//	func TestMain(m *testing.M) {
//		code := m.Run()
//		testimg.Cleanup() // images live in one per-process temp dir
//		os.Exit(code)
//	}
//
//	func TestWalk(t *testing.T) {
//		for _, s := range testimg.Matrix() {
//			img := testimg.Build(t, s)            // cached per process
//			want := testimg.KernelWalk(t, img)    // root only; skips otherwise
//			got := myReaderWalk(t, img)           // map[string]testimg.Entry
//			testimg.Compare(t, want, got, testimg.CompareOpts{})
//		}
//	}
//
// Images are made by mke2fs -d from a deterministic source tree, then
// post-processed with debugfs and e2fsck, because mke2fs 1.47.0 on its own
// leaves large parts of the format unexercised: it drops nanoseconds and
// stores only the low 32 bits of every timestamp, never writes unwritten
// (uninitialized) extents, never writes xattr values that need an EA inode
// unless the source file system could hold them, and writes every directory
// as a linear list even when it spans many blocks. See Build for the exact
// steps.
//
// mke2fs is run with a private MKE2FS_CONFIG (see MkfsConfig) so that the
// images do not depend on the distribution's /etc/mke2fs.conf (Debian's, for
// instance, switches file systems under 512 MiB to 1 KiB blocks).
package testimg
