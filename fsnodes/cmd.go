package fsnodes

import (
	"context"
	"strconv"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/memohfs/memohfs/control"
	"golang.org/x/sys/unix"
)

// cmdDir is /M/<bot>/cmd: clone, and a directory per connection
// (Inferno's cmd(3); control/cmd.go has the rules, cmd_files.go the
// files).
//
//	$ exec 3<>/M/b/cmd/clone; read n <&3
//	$ echo 'exec sh -c "echo hi; exit 3"' >&3
//	$ cat /M/b/cmd/$n/data /M/b/cmd/$n/wait
//	hi
//	4242 12 exit 3
type cmdDir struct {
	fs.Inode
	b *botDir
}

var _ fs.NodeOnAdder = (*cmdDir)(nil)

func (d *cmdDir) OnAdd(ctx context.Context) {
	d.AddChild("clone", d.NewPersistentInode(ctx, &cloneFile{b: d.b}, fs.StableAttr{Mode: syscall.S_IFREG}), false)
}

var _ fs.NodeGetattrer = (*cmdDir)(nil)

// Getattr: one subdir per connection; the times are the bot's creation.
func (d *cmdDir) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	ns, err := d.b.r.c.Cmds(d.b.name)
	if err != nil {
		return errnoOf(err)
	}
	synthDir(&out.Attr, 0o700, d.b.owner, len(ns), d.b.times(ctx).Created)
	out.SetTimeout(uncached)
	return 0
}

var _ fs.NodeLookuper = (*cmdDir)(nil)

// Lookup finds clone, or a connection by number; connections come and go,
// so no answer is cached.
func (d *cmdDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if name == "clone" {
		return lookupStatic(ctx, &d.Inode, name, out, 0)
	}
	n, err := strconv.Atoi(name)
	if err != nil || strconv.Itoa(n) != name || n <= 0 {
		return nil, syscall.ENOENT
	}
	conn, err := d.b.r.c.Cmd(d.b.name, n)
	if err != nil {
		return nil, errnoOf(err)
	}
	synthDir(&out.Attr, 0o700, d.b.owner, 0, conn.Made())
	out.SetEntryTimeout(0)
	out.SetAttrTimeout(0)
	ino := stableIno("cmd", d.b.id, name)
	return d.NewInode(ctx, &connDir{b: d.b, n: n}, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: ino}), 0
}

var _ fs.NodeReaddirer = (*cmdDir)(nil)

func (d *cmdDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	ns, err := d.b.r.c.Cmds(d.b.name)
	if err != nil {
		return nil, errnoOf(err)
	}
	out := []fuse.DirEntry{{Name: "clone", Mode: syscall.S_IFREG}}
	for _, n := range ns {
		name := strconv.Itoa(n)
		out = append(out, fuse.DirEntry{Name: name, Mode: syscall.S_IFDIR, Ino: stableIno("cmd", d.b.id, name)})
	}
	return fs.NewListDirStream(out), 0
}

// connDir is /M/<bot>/cmd/<N>: ctl, data, stderr, wait, status.
type connDir struct {
	fs.Inode
	b *botDir
	n int
}

var _ fs.NodeOnAdder = (*connDir)(nil)

func (d *connDir) OnAdd(ctx context.Context) {
	for _, f := range connFiles {
		d.AddChild(f.name, d.NewPersistentInode(ctx, &connFile{d: d, spec: f}, fs.StableAttr{Mode: syscall.S_IFREG}), false)
	}
}

var _ fs.NodeGetattrer = (*connDir)(nil)

// Getattr: the times are when the connection was made.
func (d *connDir) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	conn, err := d.conn()
	if err != nil {
		return errnoOf(err)
	}
	synthDir(&out.Attr, 0o700, d.b.owner, 0, conn.Made())
	out.SetTimeout(uncached)
	return 0
}

var _ fs.NodeLookuper = (*connDir)(nil)

func (d *connDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if _, err := d.conn(); err != nil {
		return nil, errnoOf(err)
	}
	return lookupStatic(ctx, &d.Inode, name, out, 0)
}

func (d *connDir) conn() (*control.Conn, error) { return d.b.r.c.Cmd(d.b.name, d.n) }

// cloneFile is /M/<bot>/cmd/clone: each open makes a connection and is
// its ctl (reading it gives the number).
type cloneFile struct {
	fs.Inode
	b *botDir
}

var _ fs.NodeGetattrer = (*cloneFile)(nil)

func (f *cloneFile) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	synthFile(&out.Attr, 0o600, f.b.owner, 0, f.b.times(ctx).Created)
	out.SetTimeout(uncached)
	return 0
}

var _ fs.NodeSetattrer = (*cloneFile)(nil)

func (f *cloneFile) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return f.Getattr(ctx, fh, out)
}

var _ fs.NodeOpener = (*cloneFile)(nil)

func (f *cloneFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	uid := uint32(0)
	if c, ok := fuse.FromContext(ctx); ok {
		uid = c.Uid
	}
	conn, err := f.b.r.c.CmdClone(ctx, f.b.name, uid)
	if err != nil {
		return nil, 0, errnoOf(err)
	}
	return &connHandle{conn: conn, file: control.FileCtl}, fuse.FOPEN_DIRECT_IO, 0
}

// accessOf reads the access mode.
func accessOf(flags uint32) (read, write bool) {
	switch flags & unix.O_ACCMODE {
	case unix.O_RDONLY:
		return true, false
	case unix.O_WRONLY:
		return false, true
	}
	return true, true
}
