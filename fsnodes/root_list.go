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
//   - A handle lists at opendir, and lists again at its first READDIR if
//     a bot came or went in between (/M's mtime moved). The kernel fills
//     its cache from whatever handle reads first; a listing taken at
//     opendir and read after a bot's rmdir had dropped the cache put the
//     gone bot back into it for good:
//
//     $ ls /M &              # opendir ... (rmdir /M/c1 here) ... getdents
//     $ ls /M                # c1, from the cache, forever
//
//     (Listing at every first READDIR instead made ls /M with 1,000 bots
//     go uncached in some runs, 21 READDIRPLUS each, 4-7 ms instead of
//     0.7-1 ms; why is not known.)
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

// rootListing is an open /M: its listing, taken at opendir, is taken
// again at the first READDIR if /M changed since, and after a rewind
// (Seekdir to 0).
type rootListing struct {
	r       *Root
	ds      fs.DirStream // nil: list at the next read
	at      int64        // /M's mtime when ds was taken
	checked bool         // a READDIR came: ds stands until a rewind
}

func newRootListing(ctx context.Context, r *Root) (*rootListing, syscall.Errno) {
	l := &rootListing{r: r}
	return l, l.list(ctx)
}

func (l *rootListing) list(ctx context.Context) syscall.Errno {
	at := l.r.times.ns.Load() // before the listing: a change after it moves it again
	ds, errno := l.r.Readdir(ctx)
	if errno != 0 {
		return errno
	}
	l.ds, l.at = ds, at
	return 0
}

// fresh lists again where the listing is missing, or, at the handle's
// first READDIR, older than /M.
func (l *rootListing) fresh(ctx context.Context) syscall.Errno {
	stale := l.ds == nil || (!l.checked && l.r.times.ns.Load() != l.at)
	l.checked = true
	if stale {
		return l.list(ctx)
	}
	return 0
}

var _ fs.FileReaddirenter = (*rootListing)(nil)

func (l *rootListing) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if errno := l.fresh(ctx); errno != 0 {
		return nil, errno
	}
	return l.ds.(fs.FileReaddirenter).Readdirent(ctx)
}

var _ fs.FileSeekdirer = (*rootListing)(nil)

func (l *rootListing) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off == 0 {
		l.ds, l.checked = nil, false // a rewind lists afresh
		return 0
	}
	if errno := l.fresh(ctx); errno != 0 {
		return errno
	}
	return l.ds.(fs.FileSeekdirer).Seekdir(ctx, off)
}
