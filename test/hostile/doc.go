// Package hostile holds the end-to-end robustness tests of safefs: hostile
// and damaged images mounted read-only through bin/mount.safe and served
// by bin/safefsd, walked completely with a time limit on every operation,
// and faults injected into the mount and the device.
//
//   - TestCorpus: every image of the e2fsprogs corpus of damaged
//     filesystems (../shared/corpus/e2fsprogs, or $SAFEFS_CORPUS; skipped
//     when absent) is either refused with a message naming the source or
//     served, with every damaged object named in the daemon's log.
//   - TestMutation: every image of the test matrix (testimg.Matrix), with
//     random bytes of its metadata blocks corrupted (deterministic seeds;
//     SAFEFS_MUTATION_SEEDS sets how many per image).
//   - TestDaemonKilled, TestHelperKilled, TestDeviceErrors: the daemon
//     killed with SIGKILL during the handshake, a directory walk and a
//     large read; mount.safe killed during the handshake; a device whose
//     reads fail under the mount.
//   - TestLimits: a directory of a million entries, a file of a million
//     extents, a deep directory chain and an xattr block shared by
//     thousands of inodes, served within a memory bound.
//
// Every test checks that nothing panics or hangs, that the daemon's peak
// memory (VmHWM) stays bounded, that nothing is left mounted or running,
// and that the image's SHA-256 is the same before and after: a read-only
// mount never writes. The tests need root and /dev/fuse and skip without
// them; they build bin/ with `make build`.
package hostile
