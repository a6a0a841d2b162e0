package fsnodes

import (
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Own changes: what the watcher should not drop caches for.
//
// A change memohfs makes through the mount is one the kernel already
// knows: it updated its own dentries and attributes as it went. The
// watcher sees the host's events for it too, and must not drop the
// kernel's caches for them. So every change through the mount notes how
// it left the path (noteOwn, noteOwnGone), and the watcher skips a path
// that is exactly as noted (isOwn).
//
// A note only vouches for the state it describes. A path noted gone
// stops being ours the moment the name is seen again (a lookup found it,
// or the watcher found it there): a later removal, by the bot, must
// reach the kernel, whose cache may hold the entry from that lookup. A
// gone note also lapses after ownGoneFor: by then the watcher has long
// seen the removal it was made for.
type ownNotes struct {
	ownMu sync.Mutex
	own   map[string]ownSig
	order []string // oldest first, to bound own
	// gone holds the paths memohfs removed, and when.
	gone  map[string]time.Time
	goneN atomic.Int32 // len(gone), read without the lock
	// busy counts changes memohfs is making to a path right now: the
	// watcher waits for them to finish before it judges an event there
	// (else it sees our own half-done change as someone else's).
	busy     map[string]int
	busyDone *sync.Cond
}

// ownSig is the state of a host entry right after memohfs changed it.
type ownSig struct {
	ino, size    uint64
	mtime, ctime unix.StatxTimestamp
	mode         uint16
}

const (
	ownMax     = 1 << 16
	ownGoneFor = 10 * time.Second
)

func sigOfStatx(x *unix.Statx_t) ownSig {
	return ownSig{ino: x.Ino, size: x.Size, mtime: x.Mtime, ctime: x.Ctime, mode: x.Mode}
}

// noteOwn records rel's state after a change made through the mount.
func (o *ownNotes) noteOwn(rel string, x *unix.Statx_t) {
	o.ownMu.Lock()
	defer o.ownMu.Unlock()
	o.unGoneLocked(rel)
	if o.own == nil {
		o.own = map[string]ownSig{}
	}
	if _, ok := o.own[rel]; !ok {
		o.order = append(o.order, rel)
	}
	o.own[rel] = sigOfStatx(x)
	for len(o.own) > ownMax && len(o.order) > 0 {
		delete(o.own, o.order[0])
		o.order = o.order[1:]
	}
}

// noteOwnGone records that memohfs itself removed rel.
func (o *ownNotes) noteOwnGone(rel string) {
	o.ownMu.Lock()
	defer o.ownMu.Unlock()
	delete(o.own, rel)
	if o.gone == nil || len(o.gone) >= ownMax {
		o.gone = map[string]time.Time{} // older notes lapse: the watcher is past them
	}
	o.gone[rel] = time.Now()
	o.goneN.Store(int32(len(o.gone)))
}

// sawEntry says rel was found on the host (a lookup answered it): a
// note that memohfs removed it no longer holds. Callers on hot paths
// check goneN first.
func (o *ownNotes) sawEntry(rel string) {
	o.ownMu.Lock()
	o.unGoneLocked(rel)
	o.ownMu.Unlock()
}

func (o *ownNotes) unGoneLocked(rel string) {
	if _, ok := o.gone[rel]; ok {
		delete(o.gone, rel)
		o.goneN.Store(int32(len(o.gone)))
	}
}

// isOwn reports whether rel is exactly as memohfs itself left it (x nil:
// it is gone). Found on the host, a path is no longer noted gone.
func (o *ownNotes) isOwn(rel string, x *unix.Statx_t) bool {
	o.ownMu.Lock()
	defer o.ownMu.Unlock()
	if x == nil {
		at, ok := o.gone[rel]
		return ok && time.Since(at) < ownGoneFor
	}
	o.unGoneLocked(rel)
	s, ok := o.own[rel]
	return ok && s == sigOfStatx(x)
}

func (o *ownNotes) forgetOwn() {
	o.ownMu.Lock()
	o.own, o.order, o.gone = nil, nil, nil
	o.goneN.Store(0)
	o.ownMu.Unlock()
}

// owning marks rels as being changed by memohfs until the returned func
// is called (after the change and its noteOwn).
func (o *ownNotes) owning(rels ...string) func() {
	o.ownMu.Lock()
	if o.busy == nil {
		o.busy = map[string]int{}
		o.busyDone = sync.NewCond(&o.ownMu)
	}
	for _, r := range rels {
		o.busy[r]++
	}
	o.ownMu.Unlock()
	return func() {
		o.ownMu.Lock()
		for _, r := range rels {
			if o.busy[r]--; o.busy[r] <= 0 {
				delete(o.busy, r)
			}
		}
		o.busyDone.Broadcast()
		o.ownMu.Unlock()
	}
}

// settled waits (up to limit) until memohfs is not changing rel.
func (o *ownNotes) settled(rel string, limit time.Duration) {
	o.ownMu.Lock()
	defer o.ownMu.Unlock()
	if o.busy[rel] == 0 {
		return
	}
	timer := time.AfterFunc(limit, func() {
		o.ownMu.Lock()
		o.busyDone.Broadcast()
		o.ownMu.Unlock()
	})
	defer timer.Stop()
	deadline := time.Now().Add(limit)
	for o.busy[rel] > 0 && time.Now().Before(deadline) {
		o.busyDone.Wait()
	}
}
