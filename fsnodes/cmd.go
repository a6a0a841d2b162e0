package fsnodes

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/memohfs/memohfs/internal/vtree"
)

// cmdDir is /M/<bot>/cmd (vtree.CmdDir) for the kernel: clone, and a
// directory per connection (Inferno's cmd(3); control/cmd.go has the
// rules, vtree/cmd.go the files).
//
//	$ exec 3<>/M/b/cmd/clone; read n <&3
//	$ echo 'exec sh -c "echo hi; exit 3"' >&3
//	$ cat /M/b/cmd/$n/data /M/b/cmd/$n/wait
//	hi
//	3
//
// Nothing here is cached by the kernel: connections come and go.
type cmdDir struct {
	fs.Inode
	b *botDir
	v *vtree.CmdDir
}

var _ fs.NodeOnAdder = (*cmdDir)(nil)

func (d *cmdDir) OnAdd(ctx context.Context) {
	if n, err := d.v.Lookup(ctx, "clone"); err == nil {
		d.AddChild("clone", d.NewPersistentInode(ctx, &vfile{f: n.(vtree.File)}, fs.StableAttr{Mode: syscall.S_IFREG}), false)
	}
}

var _ fs.NodeGetattrer = (*cmdDir)(nil)

// Getattr: a subdir per connection; the time is the bot's making.
func (d *cmdDir) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.SetTimeout(uncached)
	return nodeAttr(ctx, d.v, &out.Attr)
}

var _ fs.NodeLookuper = (*cmdDir)(nil)

func (d *cmdDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if name == "clone" {
		return lookupStatic(ctx, &d.Inode, name, out, 0)
	}
	n, err := d.v.Lookup(vctx(ctx), name)
	if err != nil {
		return nil, errnoOf(err)
	}
	c, ok := n.(*vtree.ConnDir)
	if !ok {
		return nil, syscall.ENOENT
	}
	if e := nodeAttr(ctx, c, &out.Attr); e != 0 {
		return nil, e
	}
	out.SetEntryTimeout(0)
	out.SetAttrTimeout(0)
	return d.NewInode(ctx, &connDir{v: c}, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: d.v.Ino(name)}), 0
}

var _ fs.NodeReaddirer = (*cmdDir)(nil)

func (d *cmdDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	return listOf(ctx, d.v)
}

// connDir is cmd/N: ctl, data, stderr, wait, status (vtree's files).
type connDir struct {
	fs.Inode
	v *vtree.ConnDir
}

var _ fs.NodeOnAdder = (*connDir)(nil)

func (d *connDir) OnAdd(ctx context.Context) {
	list, err := d.v.List(ctx)
	if err != nil {
		return // gone already: every lookup answers ENOENT
	}
	for _, e := range list {
		if n, err := d.v.Lookup(ctx, e.Name); err == nil {
			d.AddChild(e.Name, d.NewPersistentInode(ctx, &vfile{f: n.(vtree.File)}, fs.StableAttr{Mode: syscall.S_IFREG}), false)
		}
	}
}

var _ fs.NodeGetattrer = (*connDir)(nil)

func (d *connDir) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.SetTimeout(uncached)
	return nodeAttr(ctx, d.v, &out.Attr)
}

var _ fs.NodeLookuper = (*connDir)(nil)

// Lookup answers ENOENT once the connection is gone.
func (d *connDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if _, err := d.v.Attr(vctx(ctx)); err != nil {
		return nil, errnoOf(err)
	}
	return lookupStatic(ctx, &d.Inode, name, out, 0)
}
