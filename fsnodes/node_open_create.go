package fsnodes

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/memohfs/memohfs/internal/hostfs"
	"golang.org/x/sys/unix"
)

// openFlags are the open(2) flags passed on to the host file.
const openFlags = unix.O_ACCMODE | unix.O_APPEND | unix.O_NONBLOCK | unix.O_DIRECT | unix.O_SYNC |
	unix.O_DSYNC | unix.O_NOATIME | unix.O_TRUNC

var _ fs.NodeOpener = (*dataNode)(nil)

// Open opens the node's file for I/O through its fd, as the caller: the
// host checks the caller's rights (and O_TRUNC, O_NOATIME) on the file
// itself. Only a regular file is ever opened.
func (n *dataNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&unix.O_ACCMODE != unix.O_RDONLY || flags&unix.O_TRUNC != 0 {
		if e := n.writable(); e != 0 {
			return nil, 0, e
		}
	}
	var fh fs.FileHandle
	errno := n.hostFd(ctx, func(pfd int) syscall.Errno {
		if e := hostfs.RegularFile(pfd); e != 0 {
			return e
		}
		var fd int
		e := n.asCaller(ctx, makesNothing, 0, func() error {
			var err error
			fd, err = hostfs.Reopen(pfd, int(flags)&openFlags)
			return err
		})
		if e != 0 {
			return e
		}
		fh = n.newFile(fd)
		return 0
	})
	return fh, 0, errno
}

var _ fs.NodeCreater = (*dataNode)(nil)

// Create makes name with O_CREAT|O_EXCL as the caller, so it is the
// caller's from its first instant (no chown after the fact) and the host
// applies the umask, setgid inheritance and default ACLs. A name that
// exists on the host although the kernel thought it missing (made by the
// bot since the kernel's lookup) is not opened here: the kernel is told
// ESTALE, looks it up again and opens it the ordinary way, with its
// permission checks.
func (n *dataNode) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if e := n.writable(); e != 0 {
		return nil, nil, 0, e
	}
	mode, umask := modeAndUmask(mode)
	var ch *fs.Inode
	var fh fs.FileHandle
	errno := n.changeIn(ctx, name, func(dirfd int) syscall.Errno {
		var fd int
		e := n.asCaller(ctx, makesEntry, umask, func() error {
			var err error
			// O_EXCL always: a symlink at name (even a dangling one) is
			// never created through, and a fifo or device is never opened.
			fd, err = unix.Openat(dirfd, name, int(flags)&openFlags|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode&0o7777)
			return err
		})
		if e == syscall.EEXIST && flags&unix.O_EXCL == 0 {
			return syscall.ESTALE
		}
		if e != 0 {
			return e
		}
		pfd, e := hostfs.PathFd(fd)
		if e != 0 {
			return e
		}
		if ch, e = n.childOf(ctx, pfd, name, out, madeHere); e != 0 {
			unix.Close(fd)
			return e
		}
		fh = ch.Operations().(*dataNode).newFile(fd)
		return 0
	})
	return ch, fh, 0, errno
}

var _ fs.NodeTmpfiler = (*dataNode)(nil)

// Tmpfile makes an O_TMPFILE file in the directory, as the caller:
// nameless until the caller links it into place.
func (n *dataNode) Tmpfile(ctx context.Context, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if e := n.writable(); e != 0 {
		return nil, nil, 0, e
	}
	mode, umask := modeAndUmask(mode)
	var ch *fs.Inode
	var fh fs.FileHandle
	errno := n.hostFd(ctx, func(dirfd int) syscall.Errno {
		var fd int
		e := n.asCaller(ctx, makesEntry, umask, func() error {
			var err error
			fd, err = unix.Openat(dirfd, ".", int(flags)&(openFlags&^unix.O_TRUNC)|unix.O_TMPFILE|unix.O_CLOEXEC, mode&0o7777)
			return err
		})
		if e != 0 {
			return e
		}
		pfd, e := hostfs.PathFd(fd)
		if e != 0 {
			return e
		}
		var x unix.Statx_t
		if err := hostfs.Statx(pfd, "", &x); err != nil {
			unix.Close(fd)
			unix.Close(pfd)
			return fs.ToErrno(err)
		}
		attrFromStatx(&out.Attr, &x)
		ch = n.t.nodeFor(ctx, n, pfd, n.t.stable(&x))
		fh = ch.Operations().(*dataNode).newFile(fd)
		return 0
	})
	return ch, fh, 0, errno
}
