// Package journal replays the jbd2 journal of an ext3/ext4 filesystem that
// was not cleanly unmounted, in memory and without writing a byte.
//
// A filesystem with the needs_recovery feature holds committed transactions
// in its journal whose blocks were never written back to their home
// locations; reading it as it stands shows stale metadata (files missing,
// directories pointing at freed inodes, bitmaps that disagree). The kernel
// replays the journal at mount time, which writes to the device; safefs
// mounts untrusted media read-only and never writes, so it replays into an
// overlay instead: Recover finds what the kernel's jbd2 recovery
// (fs/jbd2/recovery.c: PASS_SCAN, PASS_REVOKE, PASS_REPLAY) would write, and
// Result.Overlay serves the device with those blocks in place.
//
// # Fidelity
//
// The passes follow fs/jbd2/recovery.c and the journal loading checks of
// fs/jbd2/journal.c as of Linux 6.18 (the kernel safefs is tested on),
// decision for decision: where the log ends, which transactions count,
// what a bad checksum does (see Recover), revoke records, escaped blocks,
// sequence-number wrap (tid_gt), the circular log. Where the kernel would
// replay part of the journal and then refuse the mount, Recover returns both
// that partial Result and the error, so a caller that mirrors the kernel
// refuses and a salvage tool can still look. The few places where Recover
// refuses a journal that the kernel would accept are logs no jbd2 writer
// produces (a log that runs on for more than twice the journal's length, a
// block tag that targets the journal's own blocks); they are listed on
// Recover. Fast commits (ext4's fast_commit feature) are ext4-specific
// records replayed by ext4_fc_replay, which this package does not
// implement: a journal whose fast-commit area holds records the kernel would
// replay is refused with a *FeatureError rather than shown without them.
//
// # Hostile input
//
// Every on-disk value is bounded before use: journal lengths against the
// journal inode, log positions against the journal, tag and revoke-record
// walks against the block, r_count against the block size. Each pass reads
// at most twice the journal's length, so a log that never ends (the kernel
// would loop forever on some) costs bounded time. Memory is bounded by the
// journal's length, not its size: the Result records where each replayed
// block lives in the journal (some hundred bytes a block with the indexes),
// not a copy of it, and the revoke table only tracks blocks that some
// transaction writes.
//
// # What the overlay is not
//
// The replay is the jbd2 part of mounting only. Afterwards the kernel's ext4
// also clears needs_recovery in the superblock, restores the superblock's
// error-information fields it saved before the replay, processes the orphan
// list and replays fast commits. The overlay shows none of that: its
// superblock is whatever the last journaled copy says, usually still with
// needs_recovery set, so a reader reopening ext4 on the overlay passes
// NoRecovery itself (internal/ext4.Options.NoRecovery).
package journal
