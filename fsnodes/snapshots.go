package fsnodes

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/memohfs/memohfs/internal/vtree"
)

// snapshotsDir is /M/<bot>/snapshots: one directory per snapshot; mkdir
// NAME takes one, rmdir NAME drops it.
type snapshotsDir struct {
	fs.Inode
	b *botDir
	v *vtree.SnapshotsDir
}

var _ fs.NodeGetattrer = (*snapshotsDir)(nil)

// Getattr: one subdir per snapshot; the times are the bot's creation.
func (d *snapshotsDir) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.SetTimeout(d.b.r.opts.AttrTimeout)
	return nodeAttr(ctx, d.v, &out.Attr)
}

var _ fs.NodeLookuper = (*snapshotsDir)(nil)

func (d *snapshotsDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	v, err := d.v.Snapshot(vctx(ctx), name)
	if err != nil {
		noNegative(out)
		return nil, errnoOf(err)
	}
	cacheEntry(out, d.b.r.opts.EntryTimeout, d.b.r.opts.AttrTimeout)
	if ch := d.GetChild(name); ch != nil {
		if s, ok := ch.Operations().(*snapDir); ok && s.v.Version == v.Version {
			return ch, nodeAttr(ctx, s.v, &out.Attr)
		}
	}
	s := &snapDir{d: d, v: v}
	if e := nodeAttr(ctx, v, &out.Attr); e != 0 {
		return nil, e
	}
	return d.NewInode(ctx, s, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: d.v.Ino(name), Gen: uint64(v.Version)}), 0
}

var _ fs.NodeReaddirer = (*snapshotsDir)(nil)

func (d *snapshotsDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	return listOf(ctx, d.v)
}

var _ fs.NodeMkdirer = (*snapshotsDir)(nil)

func (d *snapshotsDir) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if err := d.v.Mkdir(vctx(ctx), name); err != nil {
		return nil, errnoOf(err)
	}
	return d.Lookup(ctx, name, out)
}

var _ fs.NodeRmdirer = (*snapshotsDir)(nil)

// Rmdir drops the snapshot; its views let go of it first (the
// controller tells Root: SnapshotDropping).
func (d *snapshotsDir) Rmdir(ctx context.Context, name string) syscall.Errno {
	err := d.v.Rmdir(vctx(ctx), name)
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
	d *snapshotsDir
	v *vtree.SnapDir

	rootfs, data *tree
}

var _ fs.NodeLookuper = (*snapDir)(nil)

// Lookup finds info, data or rootfs; the first lookup of a view asks for
// its bind (only a view someone looks at is bound: `ls -l snapshots/`
// mounts no snapshot's rootfs).
func (s *snapDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ch, errno := lookupStatic(ctx, &s.Inode, name, out, s.d.b.r.opts.EntryTimeout)
	if errno == 0 && (name == "data" || name == "rootfs") {
		s.d.b.r.bound.Load().wantView(s.d.b.name, s.v.Name, name)
	}
	return ch, errno
}

var _ fs.NodeGetattrer = (*snapDir)(nil)

// Getattr is vtree's: a snapshot's dirs are rootfs and data; its times
// are when it was taken.
func (s *snapDir) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.SetTimeout(s.d.b.r.opts.AttrTimeout)
	return nodeAttr(ctx, s.v, &out.Attr)
}

var _ fs.NodeOnAdder = (*snapDir)(nil)

func (s *snapDir) OnAdd(ctx context.Context) {
	pool := s.d.b.r.creds
	for _, name := range vtree.SnapEntries {
		n, err := s.v.Lookup(ctx, name)
		if err != nil {
			continue
		}
		var node fs.InodeEmbedder
		mode := uint32(syscall.S_IFDIR)
		switch v := n.(type) {
		case vtree.File:
			node, mode = &vfile{f: v}, syscall.S_IFREG
		case *vtree.Tree:
			t := newTree(s.d.b.r.opts, pool, v.Resolve, v.Prefix, access(v.ReadOnly))
			if name == "rootfs" {
				s.rootfs = t
			} else {
				s.data = t
			}
			node = &dataNode{t: t, root: true, fd: -1}
		}
		s.AddChild(name, s.NewPersistentInode(ctx, node, fs.StableAttr{Mode: mode}), false)
	}
}

func (s *snapDir) release() {
	if s.rootfs != nil {
		s.rootfs.reset()
	}
	if s.data != nil {
		s.data.reset()
	}
}
