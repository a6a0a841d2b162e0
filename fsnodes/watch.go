package fsnodes

import (
	"log/slog"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// op is what happened to a path, as inotify said it.
type op uint32

const (
	opCreate op = 1 << iota
	opWrite
	opRemove
	opRename
	opChmod
)

func (o op) has(x op) bool { return o&x != 0 }

// change is what the watcher tells a tree about one path.
type change struct {
	Rel      string
	Op       op
	Overflow bool // events were lost: forget everything
}

// watchMask is what a watched directory reports.
const watchMask = unix.IN_CREATE | unix.IN_MODIFY | unix.IN_ATTRIB | unix.IN_DELETE | unix.IN_DELETE_SELF |
	unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_MOVE_SELF | unix.IN_ONLYDIR | unix.IN_EXCL_UNLINK

// watcher tells trees about changes made to their host dirs behind the
// mount (by the bot, inside its container), so the kernel's long-lived
// caches of data/ are dropped when the files change.
//
// Each watched tree (one bot's data dir) has its own inotify instance,
// its own goroutine and its own limits (see watchLimits and treeWatch):
// a bot that floods its instance until events are lost (IN_Q_OVERFLOW)
// drops only its own caches, and a bot with more directories than its
// share of watches loses caching only for what is not watched. Where a
// tree is not watched (a limit, no inotify instance to be had, the walk
// not there yet) covers says so, and the tree serves those paths
// uncached: nothing the watcher cannot see is cached for the tree's TTL.
//
// It speaks inotify itself rather than through fsnotify: fsnotify adds
// watches by path, and a bot that swaps a directory of that path for a
// symlink at the right moment would have root watch (and the walk list)
// whatever the link points to. Here every directory is opened beneath
// the tree's root with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS), and
// the watch is put on the open directory through its /proc/self/fd link.
type watcher struct {
	log  *slog.Logger
	lim  watchLimits
	hook func() // tests: called where a walk holds the most fds

	mu     sync.RWMutex
	trees  map[string]*treeWatch // data dir -> its watch
	closed bool

	overflows atomic.Int64 // IN_Q_OVERFLOWs seen by all trees, ever (metrics)
}

// newWatcher makes a watcher with the default limits.
func newWatcher(log *slog.Logger) *watcher { return newWatcherWith(log, watchLimits{}) }

// newWatcherWith makes a watcher whose trees each keep within lim (zero
// fields take the defaults).
func newWatcherWith(log *slog.Logger, lim watchLimits) *watcher {
	if log == nil {
		log = slog.Default()
	}
	return &watcher{log: log, lim: lim.withDefaults(), trees: map[string]*treeWatch{}}
}

// close stops watching every tree.
func (w *watcher) close() {
	w.mu.Lock()
	w.closed = true
	trees := w.trees
	w.trees = map[string]*treeWatch{}
	w.mu.Unlock()
	for _, tw := range trees {
		tw.stop()
	}
}

// watchTree starts watching root and telling tell about changes below it
// (idempotent). The walk that puts the watches runs in the tree's own
// goroutine: until it reaches a directory, covers reports it uncovered.
func (w *watcher) watchTree(root string, tell func(change)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || w.trees[root] != nil {
		return
	}
	w.trees[root] = startTreeWatch(w, root, tell)
}

// unwatchTree stops watching root: its instance, watches and fds are
// released by its goroutine, and nothing more is told about it.
func (w *watcher) unwatchTree(root string) {
	w.mu.Lock()
	tw := w.trees[root]
	delete(w.trees, root)
	w.mu.Unlock()
	if tw != nil {
		tw.stop()
	}
}

// covers gives a predicate telling whether the kernel may cache rel
// (relative to root) for a long time: true only while the directory
// holding rel is watched and, if rel is a directory, rel is watched too,
// so every change to rel's entry, attributes, pages or listing is seen.
// A root not watched (yet, or any more) covers nothing.
func (w *watcher) covers(root string) func(rel string) bool {
	return func(rel string) bool {
		w.mu.RLock()
		tw := w.trees[root]
		w.mu.RUnlock()
		return tw != nil && tw.covers(rel)
	}
}

// mkdirBeneath makes name directly in the dir fd base.
func mkdirBeneath(base int, name string, mode uint32) error {
	return unix.Mkdirat(base, name, mode)
}

// watchOverflows says how often the watcher of bot's data dir lost events
// (its inotify queue overflowed) and dropped what the kernel cached of the
// dir: 0 for a bot whose data/ is not watched (a bind serves it).
func (r *Root) watchOverflows(bot string) int {
	st, _ := r.watch.stats(r.c.DataDir(bot))
	return st.Overflows
}
