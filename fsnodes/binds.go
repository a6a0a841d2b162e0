package fsnodes

import (
	"errors"
	"log/slog"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/memohfs/memohfs/control"
	"github.com/memohfs/memohfs/internal/hostfs"
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
// A snapshot's views (snapshots/<snap>/data and rootfs) are bound the
// same way, read-only, each once it is first looked up.
//
// A bind is made outside any FUSE request (the kernel holds the parent's
// lock while it waits for our MKDIR reply, and the target's lookup would
// wait for it) by one worker that takes keys from a queue: ensure makes
// the bind a key should have, or drops one it should not. Detaching
// needs no lookup and is done at once where it must come first: before
// rmdir moves the dir to the trash, before restore swaps a new data dir
// in (so the bind never shows the pre-restore dir), and before a
// snapshot is dropped.
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
	byKey   map[bindKey]*botBind
	pending map[bindKey]bool
	wanted  map[bindKey]bool  // views asked for and not known gone: a release binds them again
	held    map[bindKey]bool  // no bind while rmdir, restore (a bot's key) or a drop (a snapshot's) works
	gen     map[string]uint64 // counts a bot's holds, so ensure sees one that came
	wake    chan struct{}
	done    chan struct{}
	stopped sync.WaitGroup
}

// bindKey names one bind: a bot's data/ (snap == ""), or the view of
// one of its snapshots (view "data" or "rootfs", read-only).
type bindKey struct{ bot, snap, view string }

func dataKey(bot string) bindKey { return bindKey{bot: bot} }

// rel is where the bind goes, below the mount.
func (k bindKey) rel() string {
	if k.snap == "" {
		return filepath.Join(k.bot, "data")
	}
	return filepath.Join(k.bot, "snapshots", k.snap, k.view)
}

// readOnly: a snapshot's views are bound read-only, data/ read-write.
func (k bindKey) readOnly() bool { return k.snap != "" }

// botBind is one bind and what it must show.
type botBind struct {
	b        *mount.Bind
	dev, ino uint64 // the host dir it shows
}

// bindCheckEvery is how often the binds are checked for ones the kernel
// detached.
const bindCheckEvery = 10 * time.Second

// bindTargetWait is how long ensure waits for a new bot's data/ to be
// found on the mount (its MKDIR reply may still be on the way).
const bindTargetWait = 5 * time.Second

func newBinds(r *Root, mnt string, log *slog.Logger) *binds {
	bs := &binds{r: r, mnt: mnt, log: log, byKey: map[bindKey]*botBind{}, pending: map[bindKey]bool{},
		wanted: map[bindKey]bool{}, held: map[bindKey]bool{}, gen: map[string]uint64{},
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	bs.stopped.Add(1)
	go bs.work()
	return bs
}

// want queues bot name's data/ for ensure.
func (bs *binds) want(name string) {
	if bs == nil {
		return
	}
	bs.queue(dataKey(name))
}

// wantView queues view ("data" or "rootfs") of bot's snapshot snap: a
// view is bound once it is first looked up (binding every snapshot of
// every bot at mount time, or every one listed, would mount each one's
// rootfs).
func (bs *binds) wantView(bot, snap, view string) {
	if bs == nil {
		return
	}
	bs.queue(bindKey{bot, snap, view})
}

func (bs *binds) queue(keys ...bindKey) {
	bs.mu.Lock()
	for _, k := range keys {
		bs.pending[k] = true
		if k.snap != "" {
			bs.wanted[k] = true
		}
	}
	bs.mu.Unlock()
	select {
	case bs.wake <- struct{}{}:
	default:
	}
}

// hold drops every bind of bot name (data/ and its snapshots' views)
// now, and makes none until release: rmdir holds it before the data dir
// goes to the trash, restore before a new one is swapped in. Safe inside
// a request: it looks nothing up.
func (bs *binds) hold(name string) {
	if bs == nil {
		return
	}
	bs.mu.Lock()
	bs.held[dataKey(name)] = true
	bs.gen[name]++
	bs.mu.Unlock()
	bs.detachWhere(func(k bindKey) bool { return k.bot == name })
}

// release ends a hold and binds name again if the bot is still there,
// with the views it had.
func (bs *binds) release(name string) {
	if bs == nil {
		return
	}
	bs.mu.Lock()
	delete(bs.held, dataKey(name))
	bs.mu.Unlock()
	bs.requeue(func(k bindKey) bool { return k.bot == name }, dataKey(name))
}

// holdSnapshot drops the views of bot's snapshot snap and makes none
// until releaseSnapshots: the snapshot is being dropped.
func (bs *binds) holdSnapshot(bot, snap string) {
	if bs == nil {
		return
	}
	bs.mu.Lock()
	bs.held[bindKey{bot: bot, snap: snap}] = true
	bs.gen[bot]++
	bs.mu.Unlock()
	bs.detachWhere(func(k bindKey) bool { return k.bot == bot && k.snap == snap })
}

// releaseSnapshots ends the snapshot holds of bot (its snapshots
// changed), binding again the views of those still there.
func (bs *binds) releaseSnapshots(bot string) {
	if bs == nil {
		return
	}
	bs.mu.Lock()
	for k := range bs.held {
		if k.bot == bot && k.snap != "" {
			delete(bs.held, k)
		}
	}
	bs.mu.Unlock()
	bs.requeue(func(k bindKey) bool { return k.bot == bot && k.snap != "" })
}

// requeue queues the wanted views that match, and extra.
func (bs *binds) requeue(match func(bindKey) bool, extra ...bindKey) {
	bs.mu.Lock()
	keys := extra
	for k := range bs.wanted {
		if match(k) {
			keys = append(keys, k)
		}
	}
	bs.mu.Unlock()
	bs.queue(keys...)
}

// isHeld says whether k may not be bound now. bs.mu is held.
func (bs *binds) isHeld(k bindKey) bool {
	return bs.held[dataKey(k.bot)] || (k.snap != "" && bs.held[bindKey{bot: k.bot, snap: k.snap}])
}

// detach drops bot name's data/ bind, and its views' binds.
func (bs *binds) detach(name string) {
	if bs == nil {
		return
	}
	bs.detachWhere(func(k bindKey) bool { return k.bot == name })
}

// detachWhere drops the binds whose keys match.
func (bs *binds) detachWhere(match func(bindKey) bool) {
	bs.mu.Lock()
	var gone []bindKey
	var bbs []*botBind
	for k, bb := range bs.byKey {
		if match(k) {
			gone = append(gone, k)
			bbs = append(bbs, bb)
			delete(bs.byKey, k)
		}
	}
	bs.mu.Unlock()
	for i, bb := range bbs {
		if err := bb.b.Detach(); err != nil {
			bs.log.Warn("detach a bind", "at", gone[i].rel(), "err", err)
		}
	}
}

// mode says how name's data/ is served: "bind" or "fuse".
func (bs *binds) mode(name string) string {
	if bs == nil {
		return "fuse"
	}
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if bs.byKey[dataKey(name)] != nil {
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
		keys := make([]bindKey, 0, len(bs.pending))
		for k := range bs.pending {
			keys = append(keys, k)
		}
		clear(bs.pending)
		bs.mu.Unlock()
		for _, k := range keys {
			select {
			case <-bs.done:
				return
			default:
			}
			bs.ensure(k)
		}
	}
}

// checkAll queues every bind that is not where it was put (the kernel
// detaches a mount whose mountpoint it invalidated).
func (bs *binds) checkAll() {
	bs.mu.Lock()
	all := make(map[bindKey]*botBind, len(bs.byKey))
	for k, bb := range bs.byKey {
		all[k] = bb
	}
	bs.mu.Unlock()
	for k, bb := range all {
		if !bs.shows(k, bb.dev, bb.ino) {
			bs.queue(k)
		}
	}
}

// shows reports whether k's target shows the host dir dev/ino (a bind of
// it is on top).
func (bs *binds) shows(k bindKey, dev, ino uint64) bool {
	var st unix.Stat_t
	err := unix.Stat(filepath.Join(bs.mnt, k.rel()), &st)
	return err == nil && st.Dev == dev && st.Ino == ino
}

// source is the host dir k's bind shows now: the bot's data dir, or the
// snapshot's copy of data/ or its mounted rootfs view. An error of kind
// not-found means there should be no bind.
func (bs *binds) source(k bindKey) (string, error) {
	c, ctx := bs.r.c, bs.r.life
	switch {
	case k.snap == "":
		if _, err := c.Status(k.bot); err != nil {
			return "", err
		}
		return c.DataDir(k.bot), nil
	case k.view == "data":
		return c.SnapshotData(ctx, k.bot, k.snap)
	default:
		return c.SnapshotRootfs(ctx, k.bot, k.snap)
	}
}

// ensure gives k the bind it should have: the dir it shows, as it is
// now, over its target; or none if the bot or snapshot is gone.
func (bs *binds) ensure(k bindKey) {
	bs.mu.Lock()
	gen, held := bs.gen[k.bot], bs.isHeld(k)
	bs.mu.Unlock()
	if held {
		return // release asks again
	}
	dir, err := bs.source(k)
	if err != nil {
		if control.KindOf(err) != control.KindNotFound {
			bs.log.Warn("stays on FUSE: find what to bind", "at", k.rel(), "err", err)
		} else {
			bs.mu.Lock()
			delete(bs.wanted, k)
			bs.mu.Unlock()
		}
		bs.detachWhere(func(x bindKey) bool { return x == k })
		return
	}
	src, err := openOwnDir(dir)
	if err != nil {
		bs.log.Warn("stays on FUSE: open the dir to bind", "at", k.rel(), "dir", dir, "err", err)
		bs.detachWhere(func(x bindKey) bool { return x == k })
		return
	}
	defer unix.Close(src)
	var sx unix.Stat_t
	if err := unix.Fstat(src, &sx); err != nil {
		bs.detachWhere(func(x bindKey) bool { return x == k })
		return
	}
	bs.mu.Lock()
	bb := bs.byKey[k]
	bs.mu.Unlock()
	if bb != nil && bb.dev == sx.Dev && bb.ino == sx.Ino && bs.shows(k, sx.Dev, sx.Ino) {
		return // in place, and showing the dir it should
	}
	bs.detachWhere(func(x bindKey) bool { return x == k })
	target, err := bs.openTarget(k)
	if err != nil {
		if !errors.Is(err, syscall.ENOENT) {
			bs.log.Warn("stays on FUSE: open the mount's node", "at", k.rel(), "err", err)
		}
		return
	}
	defer unix.Close(target)
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if bs.gen[k.bot] != gen || bs.isHeld(k) {
		return // held since: the dir opened may be on its way out
	}
	b, err := mount.BindAt(src, target, k.readOnly())
	if err != nil {
		bs.log.Warn("stays on FUSE: bind", "at", k.rel(), "err", err)
		return
	}
	bs.byKey[k] = &botBind{b: b, dev: sx.Dev, ino: sx.Ino}
}

// openOwnDir opens dir, one of memohfs's own (a bot's data dir, a
// snapshot's data copy or rootfs view): its parent is memohfs's (the
// data root's bots/, a snapshot's dir, the state dir's views/), the last
// name is taken without following a link.
func openOwnDir(dir string) (int, error) {
	parent, err := unix.Open(filepath.Dir(dir), unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(parent)
	return hostfs.OpenBeneath(parent, filepath.Base(dir), unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
}

// openTarget opens k's target (/M/name/data, or a snapshot view's), the
// FUSE node itself: our own mount, whose nodes are memohfs's. It waits a
// little for a bot just made (its MKDIR may not be answered yet), and
// refuses a target something is mounted on already.
func (bs *binds) openTarget(k bindKey) (int, error) {
	var mst unix.Stat_t
	if err := unix.Stat(bs.mnt, &mst); err != nil {
		return -1, err
	}
	p := filepath.Join(bs.mnt, k.rel())
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
	all := bs.byKey
	bs.byKey = map[bindKey]*botBind{}
	bs.mu.Unlock()
	for k, bb := range all {
		if err := bb.b.Detach(); err != nil {
			bs.log.Warn("detach a bind", "at", k.rel(), "err", err)
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

// dataPath says how bot name's data/ is served: "bind" (the kernel) or
// "fuse".
func (r *Root) dataPath(name string) string { return r.bound.Load().mode(name) }
