package fsnodes

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/memohfs/memohfs/internal/creds"
	"github.com/memohfs/memohfs/internal/hostfs"
	"golang.org/x/sys/unix"
)

var _ fs.NodeGetattrer = (*dataNode)(nil)

// Getattr is fstat of the node's fd (or of the open file it was asked
// through): a file deleted or renamed since still answers.
func (n *dataNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	// Settled before the host is read (see Lookup).
	cached := !n.t.noCache(n.t.rel(n.EmbeddedInode()))
	var e syscall.Errno
	if df, ok := f.(*dataFile); ok {
		e = df.Getattr(ctx, out)
	} else {
		e = n.hostFd(ctx, func(fd int) syscall.Errno {
			var x unix.Statx_t
			if err := hostfs.Statx(fd, "", &x); err != nil {
				return fs.ToErrno(err)
			}
			attrFromStatx(&out.Attr, &x)
			return 0
		})
	}
	if e == 0 && cached {
		n.attrTimeout(out)
	}
	return e
}

// attrTimeout lets the kernel keep attributes for the tree's TTL (host
// changes are pushed by invalidation), except where the tree says not to.
func (n *dataNode) attrTimeout(out *fuse.AttrOut) {
	if !n.t.noCache(n.t.rel(n.EmbeddedInode())) {
		out.SetTimeout(n.t.attrTTL)
	}
}

var _ fs.NodeSetattrer = (*dataNode)(nil)

// Setattr changes mode, owner, size and times through the node's fd with
// the caller's credentials: the host decides who may chmod, chown,
// truncate or set times, and what setuid/setgid bits a change clears,
// as it would for the caller on a local disk.
func (n *dataNode) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if e := n.writable(); e != 0 {
		return e
	}
	rel := n.t.rel(n.EmbeddedInode())
	defer n.t.owning(rel)()
	e := n.hostFd(ctx, func(fd int) syscall.Errno {
		if e := n.setattr(ctx, fd, f, in); e != 0 {
			return e
		}
		var x unix.Statx_t
		if err := hostfs.Statx(fd, "", &x); err != nil {
			return fs.ToErrno(err)
		}
		if killsPrivs(ctx, in) && x.Mode&unix.S_IFMT == unix.S_IFREG {
			// memohfs's own decision, made for the kernel (see
			// killsPrivs): as root, on the fd, so also for a caller who
			// could not chmod the file.
			if m := dropPrivs(ctx, uint32(x.Mode), x.Gid); m != uint32(x.Mode)&0o7777 {
				if err := hostfs.Fchmodat2(fd, "", m, unix.AT_EMPTY_PATH); err != nil {
					return fs.ToErrno(err)
				}
				if err := hostfs.Statx(fd, "", &x); err != nil {
					return fs.ToErrno(err)
				}
			}
		}
		attrFromStatx(&out.Attr, &x)
		n.t.noteOwn(rel, &x)
		return 0
	})
	if e == 0 {
		n.attrTimeout(out)
	}
	return e
}

// setattr applies what in asks for to the host inode open as fd.
func (n *dataNode) setattr(ctx context.Context, fd int, f fs.FileHandle, in *fuse.SetAttrIn) syscall.Errno {
	if m, ok := in.GetMode(); ok {
		if e := n.asCaller(ctx, makesNothing, 0, func() error {
			return hostfs.Fchmodat2(fd, "", m&0o7777, unix.AT_EMPTY_PATH)
		}); e != 0 {
			return e
		}
	}
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if uok || gok {
		u, g := -1, -1
		if uok {
			u = int(uid)
		}
		if gok {
			g = int(gid)
		}
		if e := n.asCaller(ctx, makesNothing, 0, func() error {
			return unix.Fchownat(fd, "", u, g, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW)
		}); e != 0 {
			return e
		}
	}
	if sz, ok := in.GetSize(); ok {
		if df, ok := f.(*dataFile); ok {
			// ftruncate(2) of a file the caller opened for writing: the
			// open was the permission check.
			if err := unix.Ftruncate(df.fd, int64(sz)); err != nil {
				return fs.ToErrno(err)
			}
		} else if e := n.truncate(ctx, fd, int64(sz)); e != 0 {
			return e
		}
	}
	if ts, ok := setTimes(in); ok {
		if e := n.asCaller(ctx, makesNothing, 0, func() error {
			return unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW)
		}); e != 0 {
			return e
		}
	}
	return 0
}

// truncate is truncate(2) of the node: a regular file reopened for
// writing through its fd, as the caller (who needs write permission).
func (n *dataNode) truncate(ctx context.Context, fd int, size int64) syscall.Errno {
	var x unix.Statx_t
	if err := hostfs.Statx(fd, "", &x); err != nil {
		return fs.ToErrno(err)
	}
	switch x.Mode & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFDIR:
		return syscall.EISDIR
	default:
		return syscall.EINVAL // truncate(2) of a non-regular file
	}
	return n.asCaller(ctx, makesNothing, 0, func() error {
		w, err := hostfs.Reopen(fd, unix.O_WRONLY)
		if err != nil {
			return err
		}
		defer unix.Close(w)
		return unix.Ftruncate(w, size)
	})
}

// setTimes turns the times of a SETATTR into utimensat's, keeping "now"
// as UTIME_NOW (the kernel's clock, and its permission rule: the owner,
// or anyone who may write, may set "now").
func setTimes(in *fuse.SetAttrIn) ([]unix.Timespec, bool) {
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
	set := false
	if in.Valid&fuse.FATTR_ATIME != 0 {
		set = true
		if in.Valid&fuse.FATTR_ATIME_NOW != 0 {
			ts[0].Nsec = unix.UTIME_NOW
		} else {
			ts[0] = unix.Timespec{Sec: int64(in.Atime), Nsec: int64(in.Atimensec)}
		}
	}
	if in.Valid&fuse.FATTR_MTIME != 0 {
		set = true
		if in.Valid&fuse.FATTR_MTIME_NOW != 0 {
			ts[1].Nsec = unix.UTIME_NOW
		} else {
			ts[1] = unix.Timespec{Sec: int64(in.Mtime), Nsec: int64(in.Mtimensec)}
		}
	}
	return ts, set
}

// killsPrivs reports whether a SETATTR asks to clear setuid/setgid. With
// HANDLE_KILLPRIV_V2 the kernel asks with FATTR_KILL_SUIDGID (chown,
// truncate), and, before a write by a caller without CAP_FSETID to a
// setuid/setgid file, with an empty SETATTR: in passthrough the write
// itself never reaches memohfs, and the host write runs with memohfs's
// (root's) rights, which ext4 would not clear them for.
func killsPrivs(ctx context.Context, in *fuse.SetAttrIn) bool {
	if in.Valid&fuse.FATTR_KILL_SUIDGID != 0 {
		return true
	}
	if in.Valid&^(fuse.FATTR_FH|fuse.FATTR_LOCKOWNER) != 0 {
		return false
	}
	c, ok := fuse.FromContext(ctx)
	return ok && !creds.HasCap(c.Pid, unix.CAP_FSETID)
}

// dropPrivs is the mode a write by the caller leaves, as the kernel's
// setattr_should_drop_sgid has it: setuid goes; setgid goes if group
// execute is on or the caller is not in the file's group.
func dropPrivs(ctx context.Context, mode, gid uint32) uint32 {
	m := mode &^ unix.S_ISUID
	if mode&unix.S_ISGID != 0 && (mode&unix.S_IXGRP != 0 || !callerInGroup(ctx, gid)) {
		m &^= unix.S_ISGID
	}
	return m & 0o7777
}

// callerInGroup reports whether the caller has gid as its group or one
// of its supplementary groups.
func callerInGroup(ctx context.Context, gid uint32) bool {
	c, ok := fuse.FromContext(ctx)
	return ok && creds.InGroup(c.Pid, c.Gid, gid)
}
