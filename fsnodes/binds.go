package fsnodes

import (
	"errors"
	"log/slog"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/memohfs/memohfs/mount"
	"golang.org/x/sys/unix"
)

// binds puts each bot's host data dir over its data/ node, as Plan 9's
// bind would: the kernel then serves data/ itself (native speed, inotify
// that hears the bot's writes), and the FUSE node stays underneath for
// whoever does not see the bind (another mount namespace, or binds off).
//
//	$ mkdir /memoh/b && grep /memoh/b/data /proc/self/mountinfo
//	... /memoh/b/data rw,nosuid,nodev,nosymfollow - ext4 /dev/vda ...
//
// A bind is made outside any FUSE request (the kernel holds the parent's
// lock while it waits for our MKDIR reply, and the target's lookup would
// wait for it) by one worker that takes names from a queue: ensure makes
// the bind a bot should have, or drops one it should not. Detaching
// needs no lookup and is done at once where it must come first: before
// rmdir moves the dir to the trash, and before restore swaps a new data
// dir in (so the bind never shows the pre-restore dir).
//
// The kernel detaches a mount whose mountpoint dentry it invalidates:
// memohfs never invalidates a bound data/ entry (nor its bot's) except on
// purpose, and checks the binds it holds every bindCheckEvery, making
// again any that went.
type binds struct {
	r   *Root
	mnt string
	log *slog.Logger

	// mu also covers making a bind (a move_mount, no lookup): a hold
	// waits for one in progress, then detaches it.
	mu      sync.Mutex
	byBot   map[string]*botBind
	pending map[string]bool
	held    map[string]bool   // no bind while rmdir or restore works
	gen     map[string]uint64 // counts holds, so ensure sees one that came
	wake    chan struct{}
	done    chan struct{}
	stopped sync.WaitGroup
}

// botBind is one bot's bind and what it must show.
type botBind struct {
	b        *mount.Bind
	dev, ino uint64 // the host data dir it shows
}

// bindCheckEvery is how often the binds are checked for ones the kernel
// detached.
const bindCheckEvery = 10 * time.Second

// bindTargetWait is how long ensure waits for a new bot's data/ to be
// found on the mount (its MKDIR reply may still be on the way).
const bindTargetWait = 5 * time.Second

func newBinds(r *Root, mnt string, log *slog.Logger) *binds {
	bs := &binds{r: r, mnt: mnt, log: log, byBot: map[string]*botBind{}, pending: map[string]bool{},
		held: map[string]bool{}, gen: map[string]uint64{}, wake: make(chan struct{}, 1), done: make(chan struct{})}
	bs.stopped.Add(1)
	go bs.work()
	return bs
}

// want queues name for ensure.
func (bs *binds) want(name string) {
	if bs == nil {
		return
	}
	bs.mu.Lock()
	bs.pending[name] = true
	bs.mu.Unlock()
	select {
	case bs.wake <- struct{}{}:
	default:
	}
}

// hold drops name's bind now, and makes none until release: rmdir holds
// it before the data dir goes to the trash, restore before a new one is
// swapped in. Safe inside a request: it looks nothing up.
func (bs *binds) hold(name string) {
	if bs == nil {
		return
	}
	bs.mu.Lock()
	bs.held[name] = true
	bs.gen[name]++
	bs.mu.Unlock()
	bs.detach(name)
}

// release ends a hold and binds name again if the bot is still there.
func (bs *binds) release(name string) {
	if bs == nil {
		return
	}
	bs.mu.Lock()
	delete(bs.held, name)
	bs.mu.Unlock()
	bs.want(name)
}

// detach drops name's bind, if it has one.
func (bs *binds) detach(name string) {
	if bs == nil {
		return
	}
	bs.mu.Lock()
	bb := bs.byBot[name]
	delete(bs.byBot, name)
	bs.mu.Unlock()
	if bb != nil {
		if err := bb.b.Detach(); err != nil {
			bs.log.Warn("detach data/ bind", "bot", name, "err", err)
		}
	}
}

// Mode says how name's data/ is served: "bind" or "fuse".
func (bs *binds) mode(name string) string {
	if bs == nil {
		return "fuse"
	}
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if bs.byBot[name] != nil {
		return "bind"
	}
	return "fuse"
}

func (bs *binds) work() {
	defer bs.stopped.Done()
	tick := time.NewTicker(bindCheckEvery)
	defer tick.Stop()
	for {
		select {
		case <-bs.done:
			return
		case <-bs.wake:
		case <-tick.C:
			bs.checkAll()
		}
		bs.mu.Lock()
		names := make([]string, 0, len(bs.pending))
		for n := range bs.pending {
			names = append(names, n)
		}
		clear(bs.pending)
		bs.mu.Unlock()
		for _, n := range names {
			select {
			case <-bs.done:
				return
			default:
			}
			bs.ensure(n)
		}
	}
}

// checkAll queues every bot whose bind is not where it was put (the
// kernel detaches a mount whose mountpoint it invalidated).
func (bs *binds) checkAll() {
	bs.mu.Lock()
	all := make(map[string]*botBind, len(bs.byBot))
	for name, bb := range bs.byBot {
		all[name] = bb
	}
	bs.mu.Unlock()
	for name, bb := range all {
		if !bs.shows(name, bb.dev, bb.ino) {
			bs.want(name)
		}
	}
}

// shows reports whether /M/name/data shows the host dir dev/ino (a bind
// of it is on top).
func (bs *binds) shows(name string, dev, ino uint64) bool {
	var st unix.Stat_t
	err := unix.Stat(filepath.Join(bs.mnt, name, "data"), &st)
	return err == nil && st.Dev == dev && st.Ino == ino
}

// ensure gives bot name the bind it should have: its data dir, as it is
// now, over /M/name/data; or none if the bot is gone.
func (bs *binds) ensure(name string) {
	bs.mu.Lock()
	gen, held := bs.gen[name], bs.held[name]
	bs.mu.Unlock()
	if held {
		return // release asks again
	}
	if _, err := bs.r.c.Status(name); err != nil {
		bs.detach(name)
		return
	}
	src, err := bs.openSource(name)
	if err != nil {
		bs.log.Warn("data/ stays on FUSE: open the data dir", "bot", name, "err", err)
		bs.detach(name)
		return
	}
	defer unix.Close(src)
	var sx unix.Stat_t
	if err := unix.Fstat(src, &sx); err != nil {
		bs.detach(name)
		return
	}
	bs.mu.Lock()
	bb := bs.byBot[name]
	bs.mu.Unlock()
	if bb != nil && bb.dev == sx.Dev && bb.ino == sx.Ino && bs.shows(name, sx.Dev, sx.Ino) {
		return // in place, and showing the dir the bot has now
	}
	bs.detach(name)
	target, err := bs.openTarget(name)
	if err != nil {
		if !errors.Is(err, syscall.ENOENT) {
			bs.log.Warn("data/ stays on FUSE: open the mount's data/", "bot", name, "err", err)
		}
		return
	}
	defer unix.Close(target)
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if bs.gen[name] != gen || bs.held[name] {
		return // held since: the dir opened may be on its way out
	}
	b, err := mount.BindAt(src, target, false)
	if err != nil {
		bs.log.Warn("data/ stays on FUSE: bind", "bot", name, "err", err)
		return
	}
	bs.byBot[name] = &botBind{b: b, dev: sx.Dev, ino: sx.Ino}
}

// openSource opens the bot's data dir: its parent is memohfs's own (the
// data root's bots/), the last name is taken without following a link.
func (bs *binds) openSource(name string) (int, error) {
	dir := bs.r.c.DataDir(name)
	parent, err := unix.Open(filepath.Dir(dir), unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(parent)
	return openRel(parent, filepath.Base(dir), unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
}

// openTarget opens /M/name/data, the FUSE node itself: our own mount,
// whose nodes are memohfs's. It waits a little for a bot just made (its
// MKDIR may not be answered yet), and refuses a target something is
// mounted on already.
func (bs *binds) openTarget(name string) (int, error) {
	var mst unix.Stat_t
	if err := unix.Stat(bs.mnt, &mst); err != nil {
		return -1, err
	}
	p := filepath.Join(bs.mnt, name, "data")
	deadline := time.Now().Add(bindTargetWait)
	for {
		fd, err := unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == nil {
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil || st.Dev != mst.Dev {
				unix.Close(fd)
				return -1, errors.New("something else is mounted on " + p)
			}
			return fd, nil
		}
		if !errors.Is(err, syscall.ENOENT) || time.Now().After(deadline) {
			return -1, err
		}
		select {
		case <-bs.done:
			return -1, err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// close stops the worker and detaches every bind (before the unmount:
// a mount with submounts is busy).
func (bs *binds) close() {
	if bs == nil {
		return
	}
	select {
	case <-bs.done:
	default:
		close(bs.done)
	}
	bs.stopped.Wait()
	bs.mu.Lock()
	all := bs.byBot
	bs.byBot = map[string]*botBind{}
	bs.mu.Unlock()
	for name, bb := range all {
		if err := bb.b.Detach(); err != nil {
			bs.log.Warn("detach data/ bind", "bot", name, "err", err)
		}
	}
}

// startBinds binds every bot's data dir, when binds are on and can be
// made here; else data/ stays on FUSE, and says why once.
func (r *Root) startBinds(mnt string) {
	if !r.bindsOn {
		if r.opts.DataBinds {
			r.opts.Logger.Warn("data/ goes through FUSE: no binds", "why", mount.BindsUsable())
		}
		return
	}
	bs := newBinds(r, mnt, r.opts.Logger)
	r.bound.Store(bs)
	for _, b := range r.c.Bots() {
		bs.want(b.Name)
	}
}

// DataPath says how bot name's data/ is served: "bind" (the kernel) or
// "fuse".
func (r *Root) DataPath(name string) string { return r.bound.Load().mode(name) }
