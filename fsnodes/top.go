package fsnodes

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/memohfs/memohfs/internal/vtree"
)

// topChild is the name of Root in the filesystem's own root: the mount
// shows that dir (mountinfo gives it as the mount's root, /bots).
const topChild = "bots"

// top is the filesystem's own root, which the mount does not show: its
// one child is Root, and the mount point is a copy of the mount rooted
// there (mount.FUSEOptions.Root). The kernel makes a FUSE root inode
// before INIT says the server handles POSIX ACLs, and never caches that
// inode's ACL: with /M the root, every path walk through /M by a user
// other than root (/M is root's, 1777) was a GETXATTR round trip, about
// 60 µs against 2 for a lookup the kernel answers itself. Root, found by
// a lookup after INIT, caches its ACL (none) like any dir.
//
//	$ grep memohfs /proc/self/mountinfo
//	... /bots /memoh rw,nosuid,nodev,nosymfollow ... - fuse.memohfs memohfs rw,...
type top struct {
	fs.Inode
	root *Root
}

var _ fs.NodeOnAdder = (*top)(nil)

func (t *top) OnAdd(ctx context.Context) {
	n := t.NewPersistentInode(ctx, t.root, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: vtree.StableIno("root")})
	t.AddChild(topChild, n, false)
}

var _ fs.NodeGetattrer = (*top)(nil)

// Getattr: only root sees this dir, through the mount fd memohfs holds
// while it attaches the mount.
func (t *top) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFDIR | 0o700
	out.Nlink = 3
	return 0
}
