package fsnodes

import (
	"bytes"
	"cmp"
	"errors"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// treeWatch watches one tree (a bot's data dir) with its own inotify
// instance. One goroutine (run) owns the instance and the root fd: it
// walks, reads events and changes the watched nodes, so walks and events
// are handled in the order they happened; covers reads the nodes from
// FUSE requests. A burst of events on one path (a bot writing a big file)
// is told once at its start and once at its end.
type treeWatch struct {
	w    *watcher
	root string
	tell func(change)

	file   atomic.Pointer[os.File] // the inotify instance; nil if none could be had
	ifd    int                     // file's fd, used by run only
	rootFd int                     // O_PATH fd of root, used and closed by run only
	done   chan struct{}
	once   sync.Once

	mu    sync.RWMutex // the nodes below: written by run, read by covers
	top   *wnode       // root's node; nil when root is not watched
	wds   map[int32]*wnode
	nodes int // nodes under top, watched or queued

	bmu     sync.Mutex
	pending map[string]*burst // rel -> its burst of events
	seq     uint64            // events seen (bmu), to order bursts
	// tellMu makes tells one at a time: a change is told only after all
	// told before it are done.
	tellMu sync.Mutex

	lmu    sync.Mutex
	logged map[string]bool // degraded kinds already logged

	overflows int    // IN_Q_OVERFLOWs seen (mu)
	dirBuf    []byte // getdents buffer of the walk (run only)
}

// burst gathers the events of one path after the first.
type burst struct {
	ops  op
	last uint64 // seq of its latest event
}

// quiet is how long a path's later events are gathered before they are
// told.
//
// Gathering never reorders what is told: a path's first event is told
// after whatever other paths gathered before it (a bot that writes a
// file, then a flag file saying it is done: whoever sees the flag
// through data/ sees the file's new contents).
const quiet = 2 * time.Millisecond

// startTreeWatch makes root's instance and starts its goroutine, which
// walks root first. Without an instance (fs.inotify.max_user_instances
// used up) the tree covers nothing, and that is logged once.
func startTreeWatch(w *watcher, root string, tell func(change)) *treeWatch {
	tw := &treeWatch{w: w, root: root, tell: tell, ifd: -1, rootFd: -1, done: make(chan struct{}),
		wds: map[int32]*wnode{}, pending: map[string]*burst{}, logged: map[string]bool{}}
	if !takeInstance() {
		tw.degrade(degradedInstances, nil)
		return tw
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		releaseInstance()
		if errors.Is(err, unix.EMFILE) {
			tw.degrade(degradedInstances, err)
		} else {
			tw.degradeFor(err)
		}
		return tw
	}
	// root is the data dir memohfs made (its parent is not the bot's);
	// everything below it is opened beneath this fd.
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(fd)
		releaseInstance()
		if !gone(err) {
			tw.degradeFor(err)
		}
		return tw
	}
	tw.ifd, tw.rootFd = fd, rfd
	tw.file.Store(os.NewFile(uintptr(fd), "inotify "+root))
	go tw.run()
	return tw
}

// stop ends the tree's goroutine (it releases the instance, its watches
// and the root fd); nothing is told after stop returns, except a tell
// already under way.
func (tw *treeWatch) stop() {
	tw.once.Do(func() {
		close(tw.done)
		if f := tw.file.Load(); f != nil {
			f.SetReadDeadline(time.Now()) // wakes run's read
		}
	})
}

func (tw *treeWatch) stopped() bool {
	select {
	case <-tw.done:
		return true
	default:
		return false
	}
}

func (tw *treeWatch) run() {
	defer func() {
		tw.mu.Lock()
		tw.top, tw.wds, tw.nodes = nil, map[int32]*wnode{}, 0
		tw.mu.Unlock()
		tw.file.Load().Close() // the kernel drops every watch of the instance
		releaseInstance()
		unix.Close(tw.rootFd)
	}()
	tw.rewalk(sameInstance)
	buf := make([]byte, 64<<10)
	for {
		n, err := tw.file.Load().Read(buf)
		if err != nil {
			if !tw.stopped() {
				tw.w.log.Warn("data/ change notification stopped for one bot: its data/ is served uncached",
					"dir", tw.root, "err", err)
			}
			return
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := ""
			if ev.Len > 0 {
				raw := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
				name = string(bytes.TrimRight(raw, "\x00"))
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if tw.stopped() {
				return
			}
			if !tw.event(ev.Wd, ev.Mask, name) {
				break // a new instance: the rest of buf is the old one's
			}
		}
	}
}

// renewal says whether rewalk keeps the inotify instance or replaces it.
type renewal bool

const (
	sameInstance  renewal = false
	freshInstance renewal = true
)

// rewalk forgets every watch and walks the tree from its root again.
// With freshInstance, the watches go with the instance, replaced by a
// new one (removing them one by one would queue an IN_IGNORED for each,
// enough to overflow again); if no new instance can be had, they are
// removed.
func (tw *treeWatch) rewalk(renew renewal) {
	tw.mu.Lock()
	var rm []int32
	for wd := range tw.wds {
		rm = append(rm, wd)
	}
	tw.top = &wnode{wd: -1}
	tw.wds, tw.nodes = map[int32]*wnode{}, 1
	top := tw.top
	tw.mu.Unlock()
	if renew {
		if fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK); err == nil {
			old := tw.file.Swap(os.NewFile(uintptr(fd), "inotify "+tw.root))
			tw.ifd = fd
			old.Close()
			rm = nil
			if tw.stopped() { // stop may have set the deadline on the old one
				return
			}
		}
	}
	tw.rmWatches(rm)
	tw.walk(top)
}

// event handles one inotify event (run only). It returns false when the
// instance was replaced: events read with this one are void.
func (tw *treeWatch) event(wd int32, mask uint32, name string) bool {
	if mask&unix.IN_Q_OVERFLOW != 0 {
		// Events of this tree were lost: what the kernel cached of it is
		// dropped, and the watches put back (directories made meanwhile
		// were never walked). covers answers false from the reset until
		// the walk reaches each directory again.
		tw.degrade(degradedOverflow, nil)
		tw.mu.Lock()
		tw.top = nil
		tw.overflows++
		tw.mu.Unlock()
		tw.w.overflows.Add(1)
		tw.tellNow(change{Overflow: true})
		tw.rewalk(freshInstance)
		return false
	}
	tw.mu.RLock()
	n := tw.wds[wd]
	tw.mu.RUnlock()
	if n == nil {
		return true
	}
	if mask&unix.IN_IGNORED != 0 { // the kernel dropped the watch (dir removed)
		tw.mu.Lock()
		tw.detach(n)
		tw.mu.Unlock()
		return true
	}
	var o op
	switch {
	case mask&(unix.IN_CREATE|unix.IN_MOVED_TO) != 0 && name != "":
		o = opCreate
		if mask&unix.IN_MOVED_TO != 0 {
			o = opRename
		}
	case mask&unix.IN_MODIFY != 0:
		o = opWrite
	case mask&unix.IN_ATTRIB != 0:
		o = opChmod
	case mask&unix.IN_DELETE != 0:
		o = opRemove
	case mask&unix.IN_MOVED_FROM != 0:
		o = opRename
	default:
		return true // *_SELF: told by the parent's event
	}
	rel := n.rel()
	if name != "" {
		rel = n.join(name)
	}
	if mask&unix.IN_ISDIR != 0 && name != "" {
		switch {
		case mask&(unix.IN_CREATE|unix.IN_MOVED_TO) != 0:
			tw.addDir(n, name)
		case mask&(unix.IN_DELETE|unix.IN_MOVED_FROM) != 0:
			// Gone from here: its watches (and those below) go; a move
			// within the tree walks it again under its new name.
			tw.mu.Lock()
			var rm []int32
			if c := n.kids[name]; c != nil {
				rm = tw.detach(c)
			}
			tw.mu.Unlock()
			if mask&unix.IN_MOVED_FROM != 0 {
				tw.rmWatches(rm)
			}
		}
	}
	tw.handle(rel, o)
	return true
}

// handle tells rel's first event at once (a lone change is seen without
// delay) and gathers the rest of its burst, told when it ends.
func (tw *treeWatch) handle(rel string, o op) {
	tw.bmu.Lock()
	tw.seq++
	if b, ok := tw.pending[rel]; ok {
		b.ops |= o
		b.last = tw.seq
		tw.bmu.Unlock()
		return
	}
	// What other paths gathered came first: it is told first.
	type gathered struct {
		ch   change
		last uint64
	}
	var earlier []gathered
	for r, b := range tw.pending {
		if b.ops != 0 {
			earlier = append(earlier, gathered{change{Rel: r, Op: b.ops}, b.last})
			b.ops = 0
		}
	}
	tw.pending[rel] = &burst{last: tw.seq}
	// Taken before bmu is let go: the tells keep the order of the events.
	tw.tellMu.Lock()
	tw.bmu.Unlock()
	defer tw.tellMu.Unlock()
	slices.SortFunc(earlier, func(a, b gathered) int { return cmp.Compare(a.last, b.last) })
	for _, g := range earlier {
		tw.tellLocked(g.ch)
	}
	time.AfterFunc(quiet, func() { tw.flush(rel) })
	tw.tellLocked(change{Rel: rel, Op: o})
}

// flush tells what a burst gathered after its first event, if anything.
func (tw *treeWatch) flush(rel string) {
	tw.bmu.Lock()
	b := tw.pending[rel]
	delete(tw.pending, rel)
	if b == nil || b.ops == 0 {
		tw.bmu.Unlock()
		return
	}
	tw.tellMu.Lock()
	tw.bmu.Unlock()
	defer tw.tellMu.Unlock()
	tw.tellLocked(change{Rel: rel, Op: b.ops})
}

// tellNow tells ch, after any tell in progress.
func (tw *treeWatch) tellNow(ch change) {
	tw.tellMu.Lock()
	defer tw.tellMu.Unlock()
	tw.tellLocked(ch)
}

func (tw *treeWatch) tellLocked(ch change) {
	if !tw.stopped() {
		tw.tell(ch)
	}
}

// covers: see watcher.covers. rel is slash-separated, "." for the root.
func (tw *treeWatch) covers(rel string) bool {
	tw.mu.RLock()
	defer tw.mu.RUnlock()
	n := tw.top
	if n == nil || n.wd < 0 {
		return false
	}
	if rel == "" || rel == "." {
		return true
	}
	for {
		name, rest, more := strings.Cut(rel, "/")
		c := n.kids[name]
		if !more {
			if c != nil {
				return c.wd >= 0
			}
			// A file, or a directory not known here: known to be watched
			// unless some directory here was left unwatched.
			return !n.skipped
		}
		if c == nil || c.wd < 0 {
			return false
		}
		n, rel = c, rest
	}
}

// watchStats is what a tree's watch holds, for tests and logs.
type watchStats struct {
	Watches   int      // inotify watches held
	Nodes     int      // directories watched or queued
	Degraded  []string // kinds of degradation logged
	Overflows int
}

// stats reports root's watch (ok false: not watched).
func (w *watcher) stats(root string) (st watchStats, ok bool) {
	w.mu.RLock()
	tw := w.trees[root]
	w.mu.RUnlock()
	if tw == nil {
		return st, false
	}
	tw.mu.RLock()
	st.Watches, st.Nodes, st.Overflows = len(tw.wds), tw.nodes, tw.overflows
	tw.mu.RUnlock()
	tw.lmu.Lock()
	for k := range tw.logged {
		st.Degraded = append(st.Degraded, k)
	}
	tw.lmu.Unlock()
	return st, true
}
