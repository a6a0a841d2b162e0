package fsnodes

import (
	"context"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/memohfs/memohfs/internal/creds"
	"github.com/memohfs/memohfs/internal/hostfs"
	"golang.org/x/sys/unix"
)

// dataNode is a file or directory of a tree (see tree): one host inode,
// held open as an O_PATH fd from the LOOKUP (or CREATE, MKDIR, ...) that
// found it to the FORGET that drops it, as virtiofsd and libfuse's
// passthrough_hp keep lo_inode->fd.
//
// Every operation reaches the host through that fd (hostFd), or through
// *at calls on its parent's fd for the name it was asked about: a name is
// never walked again from the tree's base, so a bot that swaps a
// directory on the way for a symlink, or a file for a fifo, changes
// nothing for a node the kernel already has. A node whose fd was dropped
// (the tree was reset by a restore) is found again from the tree's base
// without following links, and only if the same file is still there;
// else it answers ESTALE.
//
// Calls that create, remove, rename or change entries run with the
// caller's credentials (asCaller): the host kernel applies ownership,
// setgid inheritance and stripping, sticky dirs, default ACLs and the
// umask itself.
type dataNode struct {
	fs.Inode
	t *tree
	// root marks the tree's root node (data/, skills/, a snapshot's
	// views): it holds no fd of its own and uses the tree's (withBase:
	// the base, or for skills/ the prefix opened beneath it).
	root bool

	mu sync.RWMutex // guards fd and fh against a close while they are used
	fd int          // O_PATH|O_NOFOLLOW; -1 once dropped or evicted
	// fh names the file once its fd was given up to the fd budget
	// (fdbudget.go); nil while the node holds its fd, or after a reset.
	fh   *unix.FileHandle
	used atomic.Bool // used since the last eviction pass
	id   fs.StableAttr
}

var _ fs.NodeOnAdder = (*dataNode)(nil)

func (n *dataNode) OnAdd(ctx context.Context) {
	if n.root && n.t.root == nil {
		n.t.root = n.EmbeddedInode()
	}
}

var _ fs.NodeWrapChilder = (*dataNode)(nil)

func (n *dataNode) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder { return ops }

// hostFd runs fn with the node's host fd: the one way every operation
// reaches the host inode. The fd is O_PATH (it reads nothing, opens
// nothing) and stays valid while fn runs.
func (n *dataNode) hostFd(ctx context.Context, fn func(fd int) syscall.Errno) syscall.Errno {
	if n.root {
		return n.t.withBase(ctx, fn)
	}
	for tries := 0; ; tries++ {
		n.mu.RLock()
		if n.fd >= 0 {
			defer n.mu.RUnlock()
			n.noteUse()
			return fn(n.fd)
		}
		fh := n.fh
		n.mu.RUnlock()
		if tries > 3 { // found again, and evicted again at once, each time
			return syscall.ESTALE
		}
		reopen := n.reopen
		if fh != nil {
			reopen = func(ctx context.Context) syscall.Errno { return n.reopenHandle(ctx, fh) }
		}
		if e := reopen(ctx); e != 0 {
			return e
		}
	}
}

// reopen finds a node whose fd was dropped again (the tree was reset),
// from the tree's base with no symlink followed, and takes it only if it
// is the same file.
func (n *dataNode) reopen(ctx context.Context) syscall.Errno {
	_, parent := n.Parent()
	if parent == nil {
		return syscall.ESTALE // deleted since, and nobody holds it open
	}
	fd := -1
	e := n.t.withBaseDir(ctx, func(base int) syscall.Errno {
		var err error
		if fd, err = hostfs.OpenBeneath(base, n.t.rel(n.EmbeddedInode()), unix.O_PATH|unix.O_NOFOLLOW, 0); err != nil {
			return syscall.ESTALE
		}
		return 0
	})
	if e != 0 {
		return e
	}
	// Taken outside withBaseDir: n.mu is never waited for under the
	// tree's lock (an operation holds n.mu and may want the base).
	var x unix.Statx_t
	if hostfs.Statx(fd, "", &x) != nil || n.t.stable(&x) != n.StableAttr() {
		unix.Close(fd)
		return syscall.ESTALE
	}
	n.t.keep(n, fd)
	return 0
}

// dropFd closes the node's fd once nobody uses it, and forgets its file
// handle: the node answers from a fresh lookup (reopen) or ESTALE after.
func (n *dataNode) dropFd() {
	n.mu.Lock()
	n.closeFdLocked()
	n.fh = nil
	n.mu.Unlock()
}

var _ fs.NodeOnForgetter = (*dataNode)(nil)

// OnForget closes the fd once the kernel has forgotten the node.
func (n *dataNode) OnForget() {
	if !n.root {
		n.t.forget(n)
	}
}

// lookupChild opens name in the directory dirfd without following it,
// and returns the node for what it found: the node the tree already has
// for that file (it keeps its own fd), or a new one holding this fd.
func (n *dataNode) lookupChild(ctx context.Context, dirfd int, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	fd, err := hostfs.OpenBeneath(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	return n.childOf(ctx, fd, name, out, lookedUp)
}

// origin says how childOf's entry came: found by a lookup, or just made
// here for the caller (memohfs then notes its state as its own, so the
// watcher does not drop the kernel's caches for it).
type origin bool

const (
	lookedUp origin = false
	madeHere origin = true
)

// childOf makes fd (an O_PATH fd of name in n, which it takes over) a
// node of the tree, with the entry's attributes from fstat of fd itself.
// made is how the entry came (origin).
func (n *dataNode) childOf(ctx context.Context, fd int, name string, out *fuse.EntryOut, made origin) (*fs.Inode, syscall.Errno) {
	var x unix.Statx_t
	if err := hostfs.Statx(fd, "", &x); err != nil {
		unix.Close(fd)
		return nil, fs.ToErrno(err)
	}
	if made {
		n.t.noteOwn(n.t.relOf(n.EmbeddedInode(), name), &x)
	} else if n.t.goneN.Load() > 0 {
		n.t.sawEntry(n.t.relOf(n.EmbeddedInode(), name))
	}
	n.t.negs.drop(n.EmbeddedInode(), name)
	attrFromStatx(&out.Attr, &x)
	n.cacheHint(name, out)
	return n.t.nodeFor(ctx, n, fd, n.t.stable(&x)), 0
}

// creation says whether a call asCaller runs makes an entry (a file,
// dir, node or link) or makes none (it changes or removes one).
type creation bool

const (
	makesNothing creation = false
	makesEntry   creation = true
)

// asCaller runs fn with the credentials of the process that made the
// request (see internal/creds). umask is applied by the host to what fn
// creates; for calls that create nothing pass 0. A root caller's calls
// that create nothing run on the request's own thread.
func (n *dataNode) asCaller(ctx context.Context, creates creation, umask uint32, fn func() error) syscall.Errno {
	c, ok := fuse.FromContext(ctx)
	if !ok {
		return fs.ToErrno(fn()) // memohfs's own call, not a user's
	}
	if c.Uid == 0 && !creates {
		return fs.ToErrno(fn())
	}
	cred := creds.Caller(c.Pid, c.Uid, c.Gid, umask)
	return fs.ToErrno(n.t.pool.Run(cred, fn))
}

// cacheHint sets the kernel cache timeouts of a child: the tree's, or
// none for paths the tree does not let the kernel cache.
func (n *dataNode) cacheHint(name string, out *fuse.EntryOut) {
	if n.t.noCache(n.t.relOf(n.EmbeddedInode(), name)) {
		cacheEntry(out, uncached, uncached)
		return
	}
	cacheEntry(out, n.t.entryTTL, n.t.attrTTL)
}

func (n *dataNode) writable() syscall.Errno {
	if n.t.readOnly {
		return syscall.EROFS
	}
	return 0
}

// changeIn runs fn, which makes or removes the entry name in n, with n's
// fd; memohfs counts as changing name and n (whose mtime moves) until it
// is done, and n's new state is noted as its own.
func (n *dataNode) changeIn(ctx context.Context, name string, fn func(dirfd int) syscall.Errno) syscall.Errno {
	rel := n.t.rel(n.EmbeddedInode())
	defer n.t.owning(rel, n.t.relOf(n.EmbeddedInode(), name))()
	return n.hostFd(ctx, func(dirfd int) syscall.Errno {
		e := fn(dirfd)
		if e == 0 {
			n.noteOwnDir(rel, dirfd)
		}
		return e
	})
}

// noteOwnDir notes the state of directory dirfd (n, at rel) after
// memohfs changed its entries.
func (n *dataNode) noteOwnDir(rel string, dirfd int) {
	var x unix.Statx_t
	if hostfs.Statx(dirfd, "", &x) == nil {
		n.t.noteOwn(rel, &x)
	}
}
