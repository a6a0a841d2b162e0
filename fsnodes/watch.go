package fsnodes

import (
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/fsnotify/fsnotify"
	gofs "github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"
)

// watcher tells trees about changes made to their host dirs behind the
// mount (by the bot, inside its container), so the kernel's caches of
// data/ never wait out a timeout: one inotify instance, a watch on every
// directory of a data dir from the first time the mount touches it.
type watcher struct {
	log *slog.Logger
	w   *fsnotify.Watcher

	mu    sync.Mutex
	roots map[string]func(rel string) // data dir -> who to tell
	dirs  map[string]string           // watched dir -> its data dir
	done  chan struct{}
}

func newWatcher(log *slog.Logger) *watcher {
	w := &watcher{log: log, roots: map[string]func(string){}, dirs: map[string]string{}, done: make(chan struct{})}
	fw, err := fsnotify.NewWatcher()
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
func (w *watcher) watchTree(root string, tell func(rel string)) {
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
	w.mu.Lock()
	root := w.dirs[filepath.Dir(ev.Name)]
	tell := w.roots[root]
	if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
		if r, ok := w.dirs[ev.Name]; ok && r == root {
			delete(w.dirs, ev.Name) // inotify drops the watch itself
		}
	}
	w.mu.Unlock()
	if tell == nil {
		return
	}
	rel, err := filepath.Rel(root, ev.Name)
	if err != nil || strings.HasPrefix(rel, "..") {
		return
	}
	if ev.Has(fsnotify.Create) {
		var st unix.Stat_t
		if unix.Lstat(ev.Name, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			w.addDir(root, ev.Name)
		}
	}
	tell(rel)
}

// invalidatePath brings the kernel's cache of rel (a path in t, changed
// behind the mount) up to date, touching only what the kernel knows:
//
//   - gone on the host: the entry is deleted (NOTIFY_DELETE, which leaves
//     a process whose working dir it was in a deleted dir, as on a disk);
//   - replaced by another file: the same;
//   - the same file, changed: its attributes and pages are dropped, the
//     entry stays (invalidating the entry of a directory someone has as
//     working dir would cut them off: getcwd fails);
//   - new, never seen: a possible negative entry is dropped.
func invalidatePath(t *tree, rel string) {
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
	switch {
	case child == nil:
		dir.NotifyEntry(name)
	case !exists || child.StableAttr() != t.stable(&x):
		dir.NotifyDelete(name, child)
	default:
		child.NotifyContent(0, 0)
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
