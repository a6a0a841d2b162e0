package fsnodes

import (
	"context"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/memohfs/memohfs/internal/vtree"
)

// botDir is /M/<bot> (vtree.Bot) for the kernel. Its entries are
// vtree's; data/ and skills/ are trees over the bot's data dir (the same
// files: skills/ is data/.skills), served by dataNode.
type botDir struct {
	fs.Inode
	r     *Root
	v     *vtree.Bot
	name  string
	id    string
	owner uint32

	data, skills *tree
	snaps        *snapshotsDir
}

func newBotDir(r *Root, v *vtree.Bot) *botDir {
	b := &botDir{r: r, v: v, name: v.Name, id: v.ID, owner: v.Owner}
	dataDir := r.c.DataDir(v.Name)
	base := func(ctx context.Context) (string, error) {
		// With binds the kernel serves data/ itself; the FUSE node below
		// is the fallback of another mount namespace, served uncached.
		// Watching the dir would only cost CPU on every change the bot
		// makes (and an inotify instance per bot).
		if !r.bindsOn {
			r.watch.watchTree(dataDir, b.invalidate)
		}
		return dataDir, nil
	}
	b.data = newTree(r.opts, r.creds, base, "", readWrite)
	b.skills = newTree(r.opts, r.creds, base, ".skills", readWrite)
	// skills/ and data/.skills are two views of the same files: neither
	// is cached by the kernel, so each sees the other's changes at once.
	underSkills := func(rel string) bool { _, ok := cutPrefixDir(rel, ".skills"); return ok }
	// Nor what the watcher does not see (beyond the bot's watch limits,
	// or not walked yet): it would stay stale for the whole TTL.
	watched := r.watch.covers(dataDir)
	b.data.uncached = func(rel string) bool { return underSkills(rel) || !watched(rel) }
	b.skills.uncached = underSkills
	return b
}

// attr is vtree's: the bot's dirs are data, skills, snapshots and cmd;
// its times are when it was made.
func (b *botDir) attr(ctx context.Context, a *fuse.Attr) syscall.Errno {
	return nodeAttr(ctx, b.v, a)
}

var _ fs.NodeGetattrer = (*botDir)(nil)

func (b *botDir) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if e := b.attr(ctx, &out.Attr); e != 0 {
		return e
	}
	out.SetTimeout(b.r.opts.AttrTimeout)
	return 0
}

var _ fs.NodeLookuper = (*botDir)(nil)

// Lookup serves the fixed entries with cache timeouts: the names never
// change; the attributes of the files do (they come from Getattr).
func (b *botDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return lookupStatic(ctx, &b.Inode, name, out, b.r.opts.EntryTimeout)
}

// lookupStatic finds a fixed child and fills its entry from its Getattr.
func lookupStatic(ctx context.Context, dir *fs.Inode, name string, out *fuse.EntryOut, entryTTL time.Duration) (*fs.Inode, syscall.Errno) {
	ch := dir.GetChild(name)
	if ch == nil {
		return nil, syscall.ENOENT
	}
	var a fuse.AttrOut
	if ga, ok := ch.Operations().(fs.NodeGetattrer); ok {
		if e := ga.Getattr(ctx, nil, &a); e != 0 {
			return nil, e
		}
	}
	out.Attr = a.Attr
	out.SetEntryTimeout(entryTTL)
	out.SetAttrTimeout(time.Duration(a.AttrValid)*time.Second + time.Duration(a.AttrValidNsec))
	return ch, 0
}

var _ fs.NodeOnAdder = (*botDir)(nil)

// OnAdd gives the bot dir vtree's entries: its files as they are, its
// trees as dataNodes, its snapshots and cmd dirs with their FUSE caching.
func (b *botDir) OnAdd(ctx context.Context) {
	for _, name := range vtree.Entries {
		n, err := b.v.Lookup(ctx, name)
		if err != nil {
			continue
		}
		var node fs.InodeEmbedder
		mode := uint32(syscall.S_IFDIR)
		switch v := n.(type) {
		case vtree.File:
			node, mode = &vfile{f: v}, syscall.S_IFREG
		case *vtree.SnapshotsDir:
			b.snaps = &snapshotsDir{b: b, v: v}
			node = b.snaps
		case *vtree.CmdDir:
			node = &cmdDir{b: b, v: v}
		case *vtree.Tree:
			switch name {
			case "data":
				node = &dataNode{t: b.data, root: true, fd: -1}
			case "skills":
				node = &skillsRoot{dataNode{t: b.skills, root: true, fd: -1}}
			}
		}
		if node == nil {
			continue
		}
		b.AddChild(name, b.NewPersistentInode(ctx, node, fs.StableAttr{Mode: mode}), false)
	}
}

// invalidate is told, by the watcher, that something changed in the data
// dir.
func (b *botDir) invalidate(ch change) {
	b.data.invalidate(ch)
	if ch.Overflow {
		b.skills.invalidate(ch)
	} else if rest, ok := cutPrefixDir(ch.Rel, ".skills"); ok {
		ch.Rel = rest
		b.skills.invalidate(ch)
	}
}

// dataReplaced: restore swapped in a new data dir.
func (b *botDir) dataReplaced() {
	b.r.watch.unwatchTree(b.r.c.DataDir(b.name))
	for _, t := range []*tree{b.data, b.skills} {
		t.reset()
		invalidateAll(t)
	}
}

func (b *botDir) snapshotsChanged() {
	if b.snaps != nil {
		b.snaps.refresh()
	}
}

func (b *botDir) close() {
	b.r.watch.unwatchTree(b.r.c.DataDir(b.name))
	b.data.reset()
	b.skills.reset()
	b.releaseViews()
}

// releaseViews closes the fds the snapshot views hold, so the bot's
// snapshots can be unmounted and moved away (they reopen when used).
func (b *botDir) releaseViews() {
	if b.snaps == nil {
		return
	}
	for _, ch := range b.snaps.Children() {
		if s, ok := ch.Operations().(*snapDir); ok {
			s.release()
		}
	}
}

// skillsRoot is skills/: data/.skills, made when first needed.
type skillsRoot struct{ dataNode }

func (s *skillsRoot) ensure(ctx context.Context) syscall.Errno {
	return s.t.withBaseDir(ctx, func(base int) syscall.Errno {
		err := mkdirBeneath(base, ".skills", 0o755)
		if err != nil && err != syscall.EEXIST {
			return errnoOf(err)
		}
		return 0
	})
}

var _ fs.NodeMkdirer = (*skillsRoot)(nil)

func (s *skillsRoot) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if e := s.ensure(ctx); e != 0 {
		return nil, e
	}
	return s.dataNode.Mkdir(ctx, name, mode, out)
}

var _ fs.NodeCreater = (*skillsRoot)(nil)

func (s *skillsRoot) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if e := s.ensure(ctx); e != 0 {
		return nil, nil, 0, e
	}
	return s.dataNode.Create(ctx, name, flags, mode, out)
}

var _ fs.NodeReaddirer = (*skillsRoot)(nil)

func (s *skillsRoot) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	ds, e := s.dataNode.Readdir(ctx)
	if e == syscall.ENOENT {
		return fs.NewListDirStream(nil), 0
	}
	return ds, e
}

var _ fs.NodeGetattrer = (*skillsRoot)(nil)

func (s *skillsRoot) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	e := s.dataNode.Getattr(ctx, f, out)
	if e == syscall.ENOENT {
		if e := s.ensure(ctx); e != 0 {
			return e
		}
		return s.dataNode.Getattr(ctx, f, out)
	}
	return e
}
