package fsnodes

import (
	"context"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// snapshotsDir is /M/<bot>/snapshots: one directory per snapshot; mkdir
// NAME takes one, rmdir NAME drops it.
type snapshotsDir struct {
	fs.Inode
	b *botDir
}

var _ fs.NodeGetattrer = (*snapshotsDir)(nil)

// Getattr: one subdir per snapshot; the times are the bot's creation.
func (d *snapshotsDir) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	st, err := d.b.r.c.Status(d.b.name)
	if err != nil {
		return errnoOf(err)
	}
	synthDir(&out.Attr, 0o755, d.b.owner, st.Snapshots, st.Created)
	out.SetTimeout(d.b.r.opts.AttrTimeout)
	return 0
}

func (d *snapshotsDir) ino(name string) uint64 { return stableIno("snapshot", d.b.id, name) }

var _ fs.NodeLookuper = (*snapshotsDir)(nil)

func (d *snapshotsDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if e := tooLong(name); e != 0 {
		return nil, e
	}
	info, err := d.b.r.c.DescribeSnapshot(ctx, d.b.name, name)
	if err != nil {
		noNegative(out)
		return nil, errnoOf(err)
	}
	if ch := d.GetChild(name); ch != nil {
		if s, ok := ch.Operations().(*snapDir); ok && s.version == info.Version {
			s.attr(&out.Attr)
			cacheEntry(out, d.b.r.opts.EntryTimeout, d.b.r.opts.AttrTimeout)
			return ch, 0
		}
	}
	s := &snapDir{d: d, name: name, version: info.Version, created: info.Created}
	s.attr(&out.Attr)
	cacheEntry(out, d.b.r.opts.EntryTimeout, d.b.r.opts.AttrTimeout)
	return d.NewInode(ctx, s, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: d.ino(name), Gen: uint64(info.Version)}), 0
}

var _ fs.NodeReaddirer = (*snapshotsDir)(nil)

func (d *snapshotsDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	list, err := d.b.r.c.Snapshots(ctx, d.b.name)
	if err != nil {
		return nil, errnoOf(err)
	}
	entries := make([]fuse.DirEntry, 0, len(list))
	for _, s := range list {
		entries = append(entries, fuse.DirEntry{Name: s.Name, Mode: syscall.S_IFDIR, Ino: d.ino(s.Name)})
	}
	return fs.NewListDirStream(entries), 0
}

var _ fs.NodeMkdirer = (*snapshotsDir)(nil)

func (d *snapshotsDir) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if e := tooLong(name); e != 0 {
		return nil, e
	}
	if err := d.b.r.c.TakeSnapshot(ctx, d.b.name, name); err != nil {
		return nil, errnoOf(err)
	}
	return d.Lookup(ctx, name, out)
}

var _ fs.NodeRmdirer = (*snapshotsDir)(nil)

// Rmdir drops the snapshot; its views let go of it first (the
// controller tells Root: SnapshotDropping).
func (d *snapshotsDir) Rmdir(ctx context.Context, name string) syscall.Errno {
	err := d.b.r.c.DropSnapshot(ctx, d.b.name, name)
	if err == nil {
		// The views let go of their fds before the drop (SnapshotDropping),
		// but a request on a view in between takes them again, and once
		// this returns go-fuse forgets the node, so nothing else would
		// close them (hygiene saw 2 fds of a dropped snapshot's data view
		// held for good). The snapshot is gone now: no view can reopen.
		if ch := d.GetChild(name); ch != nil {
			if s, ok := ch.Operations().(*snapDir); ok {
				s.release()
			}
		}
	}
	return errnoOf(err)
}

// refresh forgets snapshot dirs that no longer exist.
func (d *snapshotsDir) refresh() {
	list, err := d.b.r.c.Snapshots(ctxBackground(), d.b.name)
	if err != nil {
		return
	}
	have := map[string]bool{}
	for _, s := range list {
		have[s.Name] = true
	}
	for name, ch := range d.Children() {
		if !have[name] {
			if s, ok := ch.Operations().(*snapDir); ok {
				s.release()
			}
			d.RmChild(name)
			d.NotifyEntry(name)
		}
	}
}

// snapDir is snapshots/<name>: info, and read-only views of the rootfs
// and of data/ at that snapshot. With binds on, each view is the host dir
// bind-mounted read-only over its node once it is first looked up:
//
//	$ ls /memoh/b/snapshots/v1/data && grep snapshots/v1 /proc/self/mountinfo
//	... /memoh/b/snapshots/v1/data ro,nosuid,nodev,nosymfollow - ext4 ...
//	... /memoh/b/snapshots/v1/rootfs ro,nosuid,nodev,nosymfollow - overlay ...
type snapDir struct {
	fs.Inode
	d       *snapshotsDir
	name    string
	version int
	created time.Time

	rootfs, data *tree
}

var _ fs.NodeLookuper = (*snapDir)(nil)

// Lookup finds info, data or rootfs; the first lookup of a view asks for
// its bind (only a view someone looks at is bound: `ls -l snapshots/`
// mounts no snapshot's rootfs).
func (s *snapDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ch, errno := lookupStatic(ctx, &s.Inode, name, out, s.d.b.r.opts.EntryTimeout)
	if errno == 0 && (name == "data" || name == "rootfs") {
		s.d.b.r.bound.Load().wantView(s.d.b.name, s.name, name)
	}
	return ch, errno
}

// attr: a snapshot's dirs are rootfs and data; its times are when it was
// taken.
func (s *snapDir) attr(a *fuse.Attr) {
	synthDir(a, 0o555, s.d.b.owner, 2, s.created)
}

var _ fs.NodeGetattrer = (*snapDir)(nil)

func (s *snapDir) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	s.attr(&out.Attr)
	out.SetTimeout(s.d.b.r.opts.AttrTimeout)
	return 0
}

var _ fs.NodeOnAdder = (*snapDir)(nil)

func (s *snapDir) OnAdd(ctx context.Context) {
	c, bot, name := s.d.b.r.c, s.d.b.name, s.name
	pool := s.d.b.r.creds
	s.rootfs = newTree(s.d.b.r.opts, pool, func(ctx context.Context) (string, error) { return c.SnapshotRootfs(ctx, bot, name) }, "", readOnly)
	s.data = newTree(s.d.b.r.opts, pool, func(ctx context.Context) (string, error) { return c.SnapshotData(ctx, bot, name) }, "", readOnly)
	add := func(n string, node fs.InodeEmbedder, mode uint32) {
		s.AddChild(n, s.NewPersistentInode(ctx, node, fs.StableAttr{Mode: mode}), false)
	}
	add("info", &textFile{owner: s.d.b.owner, mtime: func(context.Context) time.Time { return s.created }, render: func(ctx context.Context) ([]byte, error) {
		info, err := c.DescribeSnapshot(ctx, bot, name)
		return []byte(info.String()), err
	}}, syscall.S_IFREG)
	add("rootfs", &dataNode{t: s.rootfs, root: true, fd: -1}, syscall.S_IFDIR)
	// The kernel serves a view itself once it is bound (read-only, at its
	// first lookup); these nodes stay underneath, as data/'s does.
	add("data", &dataNode{t: s.data, root: true, fd: -1}, syscall.S_IFDIR)
}

// release closes the views' fds, so the snapshot can be dropped.
func (s *snapDir) release() {
	if s.rootfs != nil {
		s.rootfs.reset()
	}
	if s.data != nil {
		s.data.reset()
	}
}
