package fsnodes

import (
	"context"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/memohfs/memohfs/control"
	"github.com/memohfs/memohfs/internal/creds"
	"github.com/memohfs/memohfs/internal/vtree"
	"github.com/memohfs/memohfs/mount"
)

// Root is /M: one directory per bot. mkdir creates a bot, rmdir deletes it.
type Root struct {
	fs.Inode
	c    *control.Controller
	v    *vtree.Root // what the tree is; this face serves it to the kernel
	opts Options

	changes chan control.Change
	done    chan struct{}
	life    context.Context // ends at Close: wakes readers waiting on events
	endLife context.CancelFunc
	watch   *watcher
	dataIO  string      // "passthrough" or "fuse (why)", set at mount
	creds   *creds.Pool // runs data/ calls as their callers

	mu   sync.Mutex
	bots map[string]*botDir // bot dirs handed to the kernel

	// bound puts each bot's data dir over its data/ node (binds.go);
	// nil while the mount is coming up, or when binds are off.
	bound atomic.Pointer[binds]
	// bindsOn: binds are asked for and can be made here (set before the
	// mount serves; bound follows once it does).
	bindsOn bool

	times dirTimes // /M's mtime: moves with every bot added or removed

	aclAsks atomic.Int64 // GETXATTR of /M's access ACL (see top)
}

var _ fs.NodeOpendirHandler = (*Root)(nil)

// OpendirHandle lets the kernel cache the listing of /M (ls /M with many
// bots); bots come and go through control, which drops it (root_list.go).
func (r *Root) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	l, errno := newRootListing(ctx, r)
	if errno != 0 {
		return nil, 0, errno
	}
	return l, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

// credThreads is how many threads run data/ calls with their callers'
// credentials: calls beyond that wait for a free one.
const credThreads = 16

func newRoot(c *control.Controller, o Options) *Root {
	r := &Root{c: c, opts: o, changes: make(chan control.Change, 256), done: make(chan struct{}),
		bots: map[string]*botDir{}, creds: creds.NewPool(credThreads)}
	r.life, r.endLife = context.WithCancel(context.Background())
	r.v = vtree.NewRoot(c, r.life)
	r.v.DataPath = r.dataPath
	r.times.touch()
	r.bindsOn = o.DataBinds && mount.BindsUsable() == nil
	r.watch = newWatcher(o.Logger)
	c.Watch(func(ch control.Change) {
		switch ch.Kind {
		case control.DataReplacing:
			// Before the swap, in restore's own call: the bind must never
			// show the pre-restore dir.
			r.bound.Load().hold(ch.Bot)
			return
		case control.SnapshotDropping:
			// Before the drop, in its own call: nothing may hold the
			// snapshot's views then.
			r.snapshotDropping(ch.Bot, ch.Snap)
			return
		}
		select {
		case r.changes <- ch:
		case <-r.done:
		}
	})
	go r.follow()
	return r
}

// follow applies controller changes to the kernel's caches, outside any
// request (notifying from inside one can deadlock on the kernel's locks).
func (r *Root) follow() {
	for {
		select {
		case <-r.done:
			return
		case ch := <-r.changes:
			r.mu.Lock()
			b := r.bots[ch.Bot]
			r.mu.Unlock()
			switch ch.Kind {
			case control.BotRemoved:
				r.bound.Load().detach(ch.Bot)
				r.mu.Lock()
				delete(r.bots, ch.Bot)
				r.mu.Unlock()
				if b != nil {
					b.close()
				}
				r.times.touch() // after the change, before the drop
				r.NotifyEntry(ch.Bot)
				r.NotifyContent(0, 0) // the cached listing
			case control.BotAdded:
				r.times.touch()
				// The entry first: invalidating it detaches a bind below.
				r.NotifyEntry(ch.Bot)
				r.NotifyContent(0, 0)
				r.bound.Load().want(ch.Bot)
			case control.DataReplaced:
				if b != nil {
					b.dataReplaced()
				}
				r.bound.Load().release(ch.Bot)
			case control.SnapshotsChanged:
				if b != nil {
					b.snapshotsChanged()
				}
				r.bound.Load().releaseSnapshots(ch.Bot)
			}
		}
	}
}

// snapshotDropping lets go of snapshot snap of bot: its views' binds and
// the fds its FUSE views hold.
func (r *Root) snapshotDropping(bot, snap string) {
	r.bound.Load().holdSnapshot(bot, snap)
	r.mu.Lock()
	b := r.bots[bot]
	r.mu.Unlock()
	if b == nil || b.snaps == nil {
		return
	}
	if ch := b.snaps.GetChild(snap); ch != nil {
		if s, ok := ch.Operations().(*snapDir); ok {
			s.release()
		}
	}
}

func (r *Root) close() {
	r.bound.Load().close() // a mount with binds under it cannot unmount
	r.endLife()
	select {
	case <-r.done:
	default:
		close(r.done)
	}
	r.mu.Lock()
	bots := make([]*botDir, 0, len(r.bots))
	for _, b := range r.bots {
		bots = append(bots, b)
	}
	r.mu.Unlock()
	for _, b := range bots {
		b.close() // the fds of data/, skills/ and the snapshot views
	}
	r.watch.close()
}

var _ fs.NodeGetattrer = (*Root)(nil)

// Getattr: /M is 1777, like /tmp: anyone may mkdir a bot (it is then
// theirs, 0700), only its owner or root may rmdir it (the sticky bit).
func (r *Root) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFDIR | 0o1777
	out.Nlink = uint32(2 + r.c.BotCount()) // a bot is a dir
	r.times.fill(&out.Attr)
	out.SetTimeout(r.opts.AttrTimeout)
	return 0
}

var _ fs.NodeGetxattrer = (*Root)(nil)

// Getxattr: /M has no xattrs, and no ACL. The kernel asks for the ACL
// when someone other than root walks through /M, and keeps the answer
// (see top for when it would not); aclAsks counts the asks.
func (r *Root) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if attr == "system.posix_acl_access" {
		r.aclAsks.Add(1)
	}
	return 0, syscall.ENODATA
}

var _ fs.NodeLookuper = (*Root)(nil)

func (r *Root) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	v, err := r.v.Bot(name)
	if err != nil {
		noNegative(out)
		return nil, errnoOf(err)
	}
	cacheEntry(out, r.opts.EntryTimeout, r.opts.AttrTimeout)
	if ch := r.GetChild(name); ch != nil {
		if b, ok := ch.Operations().(*botDir); ok && b.id == v.ID {
			r.mu.Lock()
			r.bots[name] = b
			r.mu.Unlock()
			return ch, b.attr(ctx, &out.Attr)
		}
	}
	b := newBotDir(r, v)
	r.mu.Lock()
	old := r.bots[name]
	r.bots[name] = b
	r.mu.Unlock()
	if old != nil {
		old.close() // forgotten by the kernel: its fds go with it
	}
	if e := b.attr(ctx, &out.Attr); e != 0 {
		return nil, e
	}
	return r.NewInode(ctx, b, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: vtree.StableIno("bot", v.ID)}), 0
}

var _ fs.NodeReaddirer = (*Root)(nil)

func (r *Root) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	return listOf(ctx, r.v)
}

// listOf lists a tree dir for the kernel.
func listOf(ctx context.Context, d vtree.Dir) (fs.DirStream, syscall.Errno) {
	list, err := d.List(vctx(ctx))
	if err != nil {
		return nil, errnoOf(err)
	}
	entries := make([]fuse.DirEntry, 0, len(list))
	for _, e := range list {
		entries = append(entries, fuse.DirEntry{Name: e.Name, Mode: e.Mode, Ino: e.Ino})
	}
	return fs.NewListDirStream(entries), 0
}

var _ fs.NodeMkdirer = (*Root)(nil)

func (r *Root) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if err := r.v.Mkdir(vctx(ctx), name); err != nil {
		return nil, errnoOf(err)
	}
	return r.Lookup(ctx, name, out)
}

var _ fs.NodeRmdirer = (*Root)(nil)

func (r *Root) Rmdir(ctx context.Context, name string) syscall.Errno {
	r.mu.Lock()
	b := r.bots[name]
	r.mu.Unlock()
	if b != nil {
		b.releaseViews()
	}
	// No bind on a dir on its way to the trash; one is made again if the
	// delete fails.
	bs := r.bound.Load()
	bs.hold(name)
	defer bs.release(name)
	return errnoOf(r.v.Rmdir(vctx(ctx), name))
}
