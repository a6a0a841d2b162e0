package fsnodes

import (
	"context"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// The listing of /M, cached by the kernel (FOPEN_CACHE_DIR): ls /M with a
// thousand bots is answered from the page cache. Two things keep that
// cache from ever holding a bot that is gone, or missing one that came:
//
//   - A handle takes its listing at its first READDIR, not at opendir.
//     The kernel fills its cache from whatever handle reads first; a
//     listing taken at opendir, read after a bot's rmdir had dropped the
//     cache, put the gone bot back into it for good:
//
//     $ ls /M &              # opendir ... (rmdir /M/c1 here) ... getdents
//     $ ls /M                # c1, from the cache, forever
//
//   - /M's mtime moves with every bot added or removed, after the change
//     and before the cache is dropped. The kernel notes the mtime before
//     it asks for a listing and starts again from the server when it
//     differs: a READDIR answered just before a change, whose reply
//     reached the cache after the drop, is caught by it.

// dirTimes is /M's mtime (and ctime): Unix nanoseconds, strictly rising.
type dirTimes struct{ ns atomic.Int64 }

// touch moves the time on: to now, or a nanosecond past the last, so two
// changes in one clock tick still differ.
func (t *dirTimes) touch() {
	for {
		old := t.ns.Load()
		next := max(time.Now().UnixNano(), old+1)
		if t.ns.CompareAndSwap(old, next) {
			return
		}
	}
}

func (t *dirTimes) fill(a *fuse.Attr) {
	ns := t.ns.Load()
	s, n := uint64(ns/1e9), uint32(ns%1e9)
	a.Mtime, a.Mtimensec = s, n
	a.Ctime, a.Ctimensec = s, n
	a.Atime, a.Atimensec = s, n
}

// rootListing is an open /M: its listing is read at the first READDIR
// and again after a rewind (Seekdir to 0).
type rootListing struct {
	r  *Root
	ds fs.DirStream // nil until read
}

var (
	_ fs.FileReaddirenter = (*rootListing)(nil)
	_ fs.FileSeekdirer    = (*rootListing)(nil)
)

func (l *rootListing) load(ctx context.Context) syscall.Errno {
	if l.ds != nil {
		return 0
	}
	ds, errno := l.r.Readdir(ctx)
	if errno != 0 {
		return errno
	}
	l.ds = ds
	return 0
}

func (l *rootListing) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if errno := l.load(ctx); errno != 0 {
		return nil, errno
	}
	return l.ds.(fs.FileReaddirenter).Readdirent(ctx)
}

func (l *rootListing) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off == 0 {
		l.ds = nil // a rewind lists afresh
		return 0
	}
	if errno := l.load(ctx); errno != 0 {
		return errno
	}
	return l.ds.(fs.FileSeekdirer).Seekdir(ctx, off)
}
