package fusefs

import (
	"errors"
	"fmt"
	"sync"

	"safefs/internal/ext4"
)

// errorLogObjects bounds the set of objects already logged. A hostile
// image can hold millions of damaged inodes; remembering them all would
// let it grow the daemon's memory without bound, so the oldest are
// forgotten first (and may be logged again).
const errorLogObjects = 4096

// ErrorLog writes one log line per damaged object, however often the
// kernel asks about it: the first line tells a person which inode or block
// to look at, and repeating it for every stat(2) of a broken file would
// only bury it. It is safe for concurrent use.
type ErrorLog struct {
	logf func(format string, args ...any)

	mu   sync.Mutex
	seen map[string]struct{}
	ring []string // keys in the order they were logged, for eviction
	next int
}

// NewErrorLog returns an ErrorLog that writes through logf.
func NewErrorLog(logf func(format string, args ...any)) *ErrorLog {
	return &ErrorLog{logf: logf, seen: map[string]struct{}{}}
}

// Report logs err once per object. Its signature fits
// ext4.Options.Report, which receives damage the parser skipped over (a
// bad directory block in a listing, a bad hash index worked around).
func (l *ErrorLog) Report(err error) {
	l.logOnce(objectKey(err), "damaged filesystem structure skipped: %v", err)
}

// object logs err, which a request for some object failed with, once per
// object; what says which request, for the person reading the log.
func (l *ErrorLog) object(err error, what string) {
	hint := ""
	var ce *ext4.CorruptError
	switch {
	case errors.As(err, &ce):
		hint = " (the object is damaged; requests for it fail until e2fsck repairs it)"
	case errors.As(err, new(*ext4.IOError)):
		hint = " (the device failed to read)"
	}
	l.logOnce(objectKey(err), "%s: %v%s", what, err, hint)
}

// logOnce logs the line unless key was logged already.
func (l *ErrorLog) logOnce(key string, format string, args ...any) {
	l.mu.Lock()
	if _, ok := l.seen[key]; ok {
		l.mu.Unlock()
		return
	}
	if len(l.ring) < errorLogObjects {
		l.ring = append(l.ring, key)
	} else {
		delete(l.seen, l.ring[l.next])
		l.ring[l.next] = key
		l.next = (l.next + 1) % errorLogObjects
	}
	l.seen[key] = struct{}{}
	l.mu.Unlock()
	// Outside the lock: logf may block on a slow stderr.
	l.logf(format, args...)
}

// objectKey names the object an error is about, so that different
// requests failing on one damaged inode log one line.
func objectKey(err error) string {
	var ce *ext4.CorruptError
	if errors.As(err, &ce) {
		switch {
		case ce.Ino != 0:
			return fmt.Sprintf("inode %d", ce.Ino)
		case ce.Block != 0:
			return fmt.Sprintf("block %d", ce.Block)
		case ce.Group >= 0:
			return fmt.Sprintf("group %d", ce.Group)
		}
	}
	var ioe *ext4.IOError
	if errors.As(err, &ioe) {
		return fmt.Sprintf("device range %d+%d", ioe.Off, ioe.Len)
	}
	return err.Error()
}
