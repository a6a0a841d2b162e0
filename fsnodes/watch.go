package fsnodes

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

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
// caches of data/ are dropped when the files change: one inotify instance,
// a watch on every directory of a data dir from the first time the mount
// touches it. A burst of events on one path (a bot writing a big file) is
// told once at its start and once at its end.
//
// It speaks inotify itself rather than through fsnotify: fsnotify adds
// watches by path, and a bot that swaps a directory of that path for a
// symlink at the right moment would have root watch (and the walk list)
// whatever the link points to. Here every directory is opened from its
// parent's fd without following links, and the watch is put on the open
// directory through its /proc/self/fd link.
type watcher struct {
	log  *slog.Logger
	fd   int
	file *os.File // fd, for reads that Close interrupts

	mu      sync.Mutex
	roots   map[string]func(change) // data dir -> who to tell
	dirs    map[string]string       // watched dir -> its data dir
	wds     map[int32]string        // watch -> its dir
	byPath  map[string]int32        // dir -> its watch
	pending map[string]*burst       // path -> its burst of events
	done    chan struct{}
}

// burst gathers the events of one path after the first.
type burst struct {
	ops op
}

// quiet is how long a path's later events are gathered before they are
// told.
const quiet = 2 * time.Millisecond

func newWatcher(log *slog.Logger) *watcher {
	w := &watcher{log: log, fd: -1, roots: map[string]func(change){}, dirs: map[string]string{},
		wds: map[int32]string{}, byPath: map[string]int32{}, pending: map[string]*burst{}, done: make(chan struct{})}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		log.Warn("no change notification for data/: changes made by bots show after the cache timeout", "err", err)
		return w
	}
	w.fd, w.file = fd, os.NewFile(uintptr(fd), "inotify")
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
	if w.file != nil {
		w.file.Close()
	}
}

// watchTree starts watching root (idempotent).
func (w *watcher) watchTree(root string, tell func(change)) {
	if w.file == nil {
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
	if w.file == nil {
		return
	}
	w.mu.Lock()
	delete(w.roots, root)
	var drop []int32
	for d, r := range w.dirs {
		if r == root {
			drop = append(drop, w.byPath[d])
			w.forget(d)
		}
	}
	w.mu.Unlock()
	for _, wd := range drop {
		unix.InotifyRmWatch(w.fd, uint32(wd))
	}
}

// forget drops dir's bookkeeping (w.mu held).
func (w *watcher) forget(dir string) {
	if wd, ok := w.byPath[dir]; ok {
		delete(w.byPath, dir)
		if w.wds[wd] == dir {
			delete(w.wds, wd)
		}
	}
	delete(w.dirs, dir)
}

// addDir watches dir (root or below it) and the directories below it.
// Each is opened from its parent's fd with O_NOFOLLOW, starting at root
// opened with RESOLVE_BENEATH and no symlinks: a link swapped in anywhere
// on the way is never followed, so nothing outside root is watched or
// listed.
func (w *watcher) addDir(root, dir string) {
	rel, err := filepath.Rel(root, dir)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return
	}
	base, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(base)
	fd, err := openRel(base, rel, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return
	}
	w.walk(root, dir, fd)
}

// walk watches the directory open as fd (its path dir) and, depth first,
// every directory below it; it closes fd. It returns false when inotify
// has no more watches to give.
func (w *watcher) walk(root, dir string, fd int) bool {
	f := os.NewFile(uintptr(fd), dir)
	defer f.Close()
	wd, err := unix.InotifyAddWatch(w.fd, "/proc/self/fd/"+strconv.Itoa(fd), watchMask)
	if err != nil {
		if errors.Is(err, unix.ENOSPC) {
			w.log.Warn("inotify watch limit reached: raise fs.inotify.max_user_watches", "dir", dir)
			return false
		}
		return true
	}
	w.mu.Lock()
	if _, ok := w.roots[root]; !ok { // unwatched meanwhile
		w.mu.Unlock()
		unix.InotifyRmWatch(w.fd, uint32(wd))
		return true
	}
	if old, ok := w.wds[int32(wd)]; ok && old != dir {
		w.forget(old) // the same dir, moved: its new name
	}
	w.wds[int32(wd)], w.byPath[dir], w.dirs[dir] = dir, int32(wd), root
	w.mu.Unlock()
	ents, _ := f.ReadDir(-1)
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		child, err := unix.Openat(fd, e.Name(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			continue // gone, or swapped for something else: not followed
		}
		if !w.walk(root, filepath.Join(dir, e.Name()), child) {
			return false
		}
	}
	return true
}

func (w *watcher) run() {
	buf := make([]byte, 64<<10)
	for {
		n, err := w.file.Read(buf)
		if err != nil {
			select {
			case <-w.done:
			default:
				w.log.Warn("change notification stopped", "err", err)
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
			w.event(ev.Wd, ev.Mask, name)
		}
	}
}

// event handles one inotify event.
func (w *watcher) event(wd int32, mask uint32, name string) {
	if mask&unix.IN_Q_OVERFLOW != 0 {
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
		return
	}
	w.mu.Lock()
	dir, ok := w.wds[wd]
	if mask&unix.IN_IGNORED != 0 && ok {
		w.forget(dir) // the kernel dropped the watch (dir removed)
	}
	w.mu.Unlock()
	if !ok || mask&unix.IN_IGNORED != 0 {
		return
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
		return // *_SELF: told by the parent's event
	}
	p := dir
	if name != "" {
		p = filepath.Join(dir, name)
	}
	w.handle(p, o, mask)
}

func (w *watcher) handle(name string, o op, mask uint32) {
	if mask&unix.IN_ISDIR != 0 {
		switch {
		case mask&(unix.IN_CREATE|unix.IN_MOVED_TO) != 0:
			w.mu.Lock()
			root := w.dirs[filepath.Dir(name)]
			w.mu.Unlock()
			if root != "" {
				w.addDir(root, name)
			}
		case mask&(unix.IN_DELETE|unix.IN_MOVED_FROM) != 0:
			// Gone from here: its watches (and those below) are
			// forgotten; a move within the tree adds them back under
			// the new name.
			w.mu.Lock()
			var drop []int32
			for d := range w.dirs {
				if _, ok := cutPrefixDir(d, name); ok {
					if wd, ok := w.byPath[d]; ok {
						drop = append(drop, wd)
					}
					w.forget(d)
				}
			}
			w.mu.Unlock()
			if mask&unix.IN_MOVED_FROM != 0 {
				for _, wd := range drop {
					unix.InotifyRmWatch(w.fd, uint32(wd))
				}
			}
		}
	}
	w.mu.Lock()
	if b, ok := w.pending[name]; ok {
		b.ops |= o // told when the burst ends
		w.mu.Unlock()
		return
	}
	w.pending[name] = &burst{}
	w.mu.Unlock()
	time.AfterFunc(quiet, func() { w.flush(name) })
	// The first event is told at once: a lone change is seen without
	// delay, the rest of a burst at its end.
	w.tell(name, o)
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

func (w *watcher) tell(name string, o op) {
	w.mu.Lock()
	root := w.dirs[filepath.Dir(name)]
	tell := w.roots[root]
	w.mu.Unlock()
	if tell == nil {
		return
	}
	rel, err := filepath.Rel(root, name)
	if err != nil || strings.HasPrefix(rel, "..") {
		return
	}
	tell(change{Rel: rel, Op: o})
}

// mkdirBeneath makes name directly in the dir fd base.
func mkdirBeneath(base int, name string, mode uint32) error {
	return unix.Mkdirat(base, name, mode)
}
