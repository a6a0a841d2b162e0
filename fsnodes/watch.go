package fsnodes

import (
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	gofs "github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"
)

// change is what the watcher tells a tree about one path.
type change struct {
	Rel      string
	Op       fsnotify.Op
	Overflow bool // events were lost: forget everything
}

// watcher tells trees about changes made to their host dirs behind the
// mount (by the bot, inside its container), so the kernel's long-lived
// caches of data/ are dropped when the files change: one inotify instance,
// a watch on every directory of a data dir from the first time the mount
// touches it. A burst of events on one path (a bot writing a big file) is
// told once at its start and once at its end.
type watcher struct {
	log *slog.Logger
	w   *fsnotify.Watcher

	mu      sync.Mutex
	roots   map[string]func(change) // data dir -> who to tell
	dirs    map[string]string       // watched dir -> its data dir
	pending map[string]*burst       // path -> its burst of events
	done    chan struct{}
}

// burst gathers the events of one path after the first.
type burst struct {
	ops fsnotify.Op
}

// quiet is how long a path's later events are gathered before they are
// told.
const quiet = 2 * time.Millisecond

func newWatcher(log *slog.Logger) *watcher {
	w := &watcher{log: log, roots: map[string]func(change){}, dirs: map[string]string{},
		pending: map[string]*burst{}, done: make(chan struct{})}
	fw, err := fsnotify.NewBufferedWatcher(4096)
	if err != nil {
		log.Warn("no change notification for data/: changes made by bots show after the cache timeout", "err", err)
		return w
	}
	w.w = fw
	go w.run()
	return w
}

func (w *watcher) close() {
	select {
	case <-w.done:
		return
	default:
		close(w.done)
	}
	if w.w != nil {
		w.w.Close()
	}
}

// watchTree starts watching root (idempotent).
func (w *watcher) watchTree(root string, tell func(change)) {
	if w.w == nil {
		return
	}
	w.mu.Lock()
	if _, ok := w.roots[root]; ok {
		w.mu.Unlock()
		return
	}
	w.roots[root] = tell
	w.mu.Unlock()
	w.addDir(root, root)
}

func (w *watcher) unwatchTree(root string) {
	if w.w == nil {
		return
	}
	w.mu.Lock()
	delete(w.roots, root)
	var drop []string
	for d, r := range w.dirs {
		if r == root {
			drop = append(drop, d)
			delete(w.dirs, d)
		}
	}
	w.mu.Unlock()
	for _, d := range drop {
		w.w.Remove(d)
	}
}

// addDir watches dir and the directories below it. Symlinks are not
// followed (WalkDir does not).
func (w *watcher) addDir(root, dir string) {
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if err := w.w.Add(p); err != nil {
			if errorsIsNoSpace(err) {
				w.log.Warn("inotify watch limit reached: raise fs.inotify.max_user_watches", "dir", p)
				return filepath.SkipAll
			}
			return nil
		}
		w.mu.Lock()
		w.dirs[p] = root
		w.mu.Unlock()
		return nil
	})
}

func errorsIsNoSpace(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "no space left") || err == syscall.ENOSPC)
}

func (w *watcher) run() {
	for {
		select {
		case <-w.done:
			return
		case err, ok := <-w.w.Errors:
			if !ok {
				return
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				w.log.Warn("change notifications were lost: dropping the kernel's caches of data/")
				w.mu.Lock()
				tells := make([]func(change), 0, len(w.roots))
				for _, t := range w.roots {
					tells = append(tells, t)
				}
				w.mu.Unlock()
				for _, t := range tells {
					t(change{Overflow: true})
				}
				continue
			}
			w.log.Warn("change notification", "err", err)
		case ev, ok := <-w.w.Events:
			if !ok {
				return
			}
			w.handle(ev)
		}
	}
}

func (w *watcher) handle(ev fsnotify.Event) {
	if ev.Has(fsnotify.Create) {
		var st unix.Stat_t
		if unix.Lstat(ev.Name, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			w.mu.Lock()
			root := w.dirs[filepath.Dir(ev.Name)]
			w.mu.Unlock()
			if root != "" {
				w.addDir(root, ev.Name)
			}
		}
	}
	w.mu.Lock()
	if b, ok := w.pending[ev.Name]; ok {
		b.ops |= ev.Op // told when the burst ends
		w.mu.Unlock()
		return
	}
	w.pending[ev.Name] = &burst{}
	w.mu.Unlock()
	name := ev.Name
	time.AfterFunc(quiet, func() { w.flush(name) })
	// The first event is told at once: a lone change is seen without
	// delay, the rest of a burst at its end.
	w.tell(name, ev.Op)
}

// flush tells what a burst gathered after its first event, if anything.
func (w *watcher) flush(name string) {
	w.mu.Lock()
	b := w.pending[name]
	delete(w.pending, name)
	w.mu.Unlock()
	if b != nil && b.ops != 0 {
		w.tell(name, b.ops)
	}
}

func (w *watcher) tell(name string, op fsnotify.Op) {
	w.mu.Lock()
	root := w.dirs[filepath.Dir(name)]
	tell := w.roots[root]
	if op.Has(fsnotify.Remove) || op.Has(fsnotify.Rename) {
		if r, ok := w.dirs[name]; ok && r == root {
			delete(w.dirs, name) // inotify drops the watch itself
		}
	}
	w.mu.Unlock()
	if tell == nil {
		return
	}
	rel, err := filepath.Rel(root, name)
	if err != nil || strings.HasPrefix(rel, "..") {
		return
	}
	tell(change{Rel: rel, Op: op})
}

// invalidate brings the kernel's cache of a path in t (changed behind
// the mount) up to date, touching only what the kernel knows:
//
//   - the host entry is as memohfs itself left it: nothing (our own change);
//   - gone on the host, or replaced by another file: the entry is deleted
//     (NOTIFY_DELETE, which leaves a process whose working dir it was in a
//     deleted dir, as on a disk);
//   - the same file, changed: its attributes and pages are dropped, the
//     entry stays (invalidating the entry of a directory someone has as
//     working dir would cut them off: getcwd fails);
//   - new, never seen: a negative entry is dropped;
//
// and a directory whose entries changed has its cached listing dropped.
func (t *tree) invalidate(ch change) {
	if ch.Overflow {
		invalidateAll(t)
		return
	}
	rel := ch.Rel
	if t.root == nil || rel == "" || rel == "." {
		return
	}
	parts := strings.Split(filepath.ToSlash(rel), "/")
	dir := t.root
	for _, p := range parts[:len(parts)-1] {
		dir = dir.GetChild(p)
		if dir == nil {
			return // the kernel knows nothing below here
		}
	}
	name := parts[len(parts)-1]
	full := t.relOf(dir, name)
	// A change memohfs is making there right now is judged when it is done.
	t.settled(full, time.Second)
	child := dir.GetChild(name)
	var x unix.Statx_t
	exists := t.withBase(ctxBackground(), func(base int) syscall.Errno {
		fd, err := openRel(base, t.rel(dir), unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			return gofs.ToErrno(err)
		}
		defer unix.Close(fd)
		return gofs.ToErrno(statx(fd, name, &x))
	}) == 0
	if exists && t.isOwn(full, &x) || !exists && t.isOwn(full, nil) {
		return
	}
	switch {
	case child == nil:
		dir.NotifyEntry(name)
	case !exists || child.StableAttr() != t.stable(&x):
		dir.NotifyDelete(name, child)
	default:
		child.NotifyContent(0, 0)
	}
	if ch.Op.Has(fsnotify.Create) || ch.Op.Has(fsnotify.Remove) || ch.Op.Has(fsnotify.Rename) {
		dir.NotifyContent(0, 0) // its cached listing
	}
}

// invalidateAll forgets every entry the kernel knows under t's root.
func invalidateAll(t *tree) {
	if t.root == nil {
		return
	}
	var walk func(n *gofs.Inode)
	walk = func(n *gofs.Inode) {
		for name, ch := range n.Children() {
			walk(ch)
			ch.NotifyContent(0, 0)
			n.NotifyEntry(name)
		}
	}
	walk(t.root)
	t.root.NotifyContent(0, 0)
	t.forgetOwn()
}

// cutPrefixDir reports whether rel is at or below dir, and the rest.
func cutPrefixDir(rel, dir string) (string, bool) {
	if rel == dir {
		return ".", true
	}
	rest, ok := strings.CutPrefix(rel, dir+string(os.PathSeparator))
	return rest, ok
}

// mkdirBeneath makes name directly in the dir fd base.
func mkdirBeneath(base int, name string, mode uint32) error {
	return unix.Mkdirat(base, name, mode)
}
