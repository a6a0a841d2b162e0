package fsnodes

import (
	"context"
	"errors"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/memohfs/memohfs/control"
	"golang.org/x/sys/unix"
)

// dataNode is a file or directory in a tree (see tree).
type dataNode struct {
	fs.Inode
	t *tree

	// open holds fds of the node's open handles, for what must work on a
	// node that has no path any more: fstat of an open directory renamed
	// over, linking an O_TMPFILE file into place.
	mu   sync.Mutex
	open map[int]int // fd -> handles using it
}

func (n *dataNode) track(fd int) {
	n.mu.Lock()
	if n.open == nil {
		n.open = map[int]int{}
	}
	n.open[fd]++
	n.mu.Unlock()
}

func (n *dataNode) untrack(fd int) {
	n.mu.Lock()
	if n.open[fd]--; n.open[fd] <= 0 {
		delete(n.open, fd)
	}
	n.mu.Unlock()
}

// withOpenFd runs fn with a dup of one of the node's open fds.
func (n *dataNode) withOpenFd(fn func(fd int) syscall.Errno) syscall.Errno {
	n.mu.Lock()
	fd := -1
	for f := range n.open {
		if d, err := unix.Dup(f); err == nil {
			fd = d
			break
		}
	}
	n.mu.Unlock()
	if fd < 0 {
		return syscall.ENOENT
	}
	defer unix.Close(fd)
	return fn(fd)
}

// orphan reports whether the node has no path (deleted or renamed over).
func (n *dataNode) orphan() bool {
	if n.EmbeddedInode() == n.t.root {
		return false
	}
	_, p := n.Parent()
	return p == nil
}

var (
	_ fs.NodeLookuper        = (*dataNode)(nil)
	_ fs.NodeGetattrer       = (*dataNode)(nil)
	_ fs.NodeSetattrer       = (*dataNode)(nil)
	_ fs.NodeOpener          = (*dataNode)(nil)
	_ fs.NodeCreater         = (*dataNode)(nil)
	_ fs.NodeMkdirer         = (*dataNode)(nil)
	_ fs.NodeMknoder         = (*dataNode)(nil)
	_ fs.NodeSymlinker       = (*dataNode)(nil)
	_ fs.NodeLinker          = (*dataNode)(nil)
	_ fs.NodeReadlinker      = (*dataNode)(nil)
	_ fs.NodeUnlinker        = (*dataNode)(nil)
	_ fs.NodeRmdirer         = (*dataNode)(nil)
	_ fs.NodeRenamer         = (*dataNode)(nil)
	_ fs.NodeOpendirHandler  = (*dataNode)(nil)
	_ fs.NodeReaddirer       = (*dataNode)(nil)
	_ fs.NodeStatfser        = (*dataNode)(nil)
	_ fs.NodeGetxattrer      = (*dataNode)(nil)
	_ fs.NodeSetxattrer      = (*dataNode)(nil)
	_ fs.NodeRemovexattrer   = (*dataNode)(nil)
	_ fs.NodeListxattrer     = (*dataNode)(nil)
	_ fs.NodeCopyFileRanger  = (*dataNode)(nil)
	_ fs.NodeOnAdder         = (*dataNode)(nil)
	_ fs.NodeWrapChilder     = (*dataNode)(nil)
	_ fs.FilePassthroughFder = (*dataFile)(nil)
)

func (n *dataNode) OnAdd(ctx context.Context) {
	if n.t.root == nil {
		n.t.root = n.EmbeddedInode()
	}
}

func (n *dataNode) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder { return ops }

// do runs fn with the directory holding n and n's name in it (name is ""
// for the tree's root: act on dirfd itself).
func (n *dataNode) do(ctx context.Context, fn func(dirfd int, name string) syscall.Errno) syscall.Errno {
	return n.t.withBase(ctx, func(base int) syscall.Errno {
		dirfd, name, err := n.t.at(base, n.EmbeddedInode())
		if err != nil {
			return fs.ToErrno(err)
		}
		defer unix.Close(dirfd)
		return fn(dirfd, name)
	})
}

// inDir runs fn with n itself opened as a directory (O_PATH), for
// operations on its children.
func (n *dataNode) inDir(ctx context.Context, fn func(dirfd int) syscall.Errno) syscall.Errno {
	return n.t.withBase(ctx, func(base int) syscall.Errno {
		fd, err := openRel(base, n.t.rel(n.EmbeddedInode()), unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			return fs.ToErrno(err)
		}
		defer unix.Close(fd)
		return fn(fd)
	})
}

// changeIn runs fn, which makes or removes the entry name in n, with n
// opened as a directory; memohfs counts as changing name and n (whose
// mtime moves) until it is done, and n's new state is noted as its own.
func (n *dataNode) changeIn(ctx context.Context, name string, fn func(dirfd int) syscall.Errno) syscall.Errno {
	rel := n.t.rel(n.EmbeddedInode())
	defer n.t.owning(rel, n.t.relOf(n.EmbeddedInode(), name))()
	return n.inDir(ctx, func(dirfd int) syscall.Errno {
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
	if statx(dirfd, "", &x) == nil {
		n.t.noteOwn(rel, &x)
	}
}

func (n *dataNode) writable() syscall.Errno {
	if n.t.readOnly {
		return syscall.EROFS
	}
	return 0
}

// child makes (or finds) the node for name, stat-ed in dirfd; made says
// memohfs just made it (the watcher then leaves the kernel's cache alone).
func (n *dataNode) child(ctx context.Context, dirfd int, name string, out *fuse.EntryOut, made bool) (*fs.Inode, syscall.Errno) {
	var x unix.Statx_t
	if err := statx(dirfd, name, &x); err != nil {
		return nil, fs.ToErrno(err)
	}
	if made {
		n.t.noteOwn(n.t.relOf(n.EmbeddedInode(), name), &x)
	}
	attrFromStatx(&out.Attr, &x)
	n.cacheHint(name, out)
	return n.NewInode(ctx, &dataNode{t: n.t}, n.t.stable(&x)), 0
}

// cacheHint sets the kernel cache timeouts of a child: the tree's, or
// none for paths the tree does not let the kernel cache.
func (n *dataNode) cacheHint(name string, out *fuse.EntryOut) {
	if n.t.noCache(path.Join(n.t.rel(n.EmbeddedInode()), name)) {
		cacheEntry(out, uncached, uncached)
		return
	}
	cacheEntry(out, n.t.entryTTL, n.t.attrTTL)
}

func (n *dataNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	var ch *fs.Inode
	errno := n.inDir(ctx, func(dirfd int) syscall.Errno {
		var e syscall.Errno
		ch, e = n.child(ctx, dirfd, name, out, false)
		return e
	})
	if errno == syscall.ENOENT && n.t.noCache(n.t.relOf(n.EmbeddedInode(), name)) {
		noNegative(out)
	}
	return ch, errno
}

func (n *dataNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	e := n.getattr(ctx, f, out)
	if e == 0 {
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

func (n *dataNode) getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if df, ok := f.(*dataFile); ok {
		return df.Getattr(ctx, out)
	}
	if n.orphan() {
		return n.withOpenFd(func(fd int) syscall.Errno {
			var x unix.Statx_t
			if err := statx(fd, "", &x); err != nil {
				return fs.ToErrno(err)
			}
			attrFromStatx(&out.Attr, &x)
			return 0
		})
	}
	return n.do(ctx, func(dirfd int, name string) syscall.Errno {
		var x unix.Statx_t
		if err := statx(dirfd, name, &x); err != nil {
			return fs.ToErrno(err)
		}
		attrFromStatx(&out.Attr, &x)
		return 0
	})
}

const sysFchmodat2 = 452 // fchmodat2(2), Linux 6.6: honours AT_SYMLINK_NOFOLLOW

func fchmodatNoFollow(dirfd int, name string, mode uint32) error {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return err
	}
	flags := unix.AT_SYMLINK_NOFOLLOW
	if name == "" {
		flags |= unix.AT_EMPTY_PATH
	}
	_, _, e := unix.Syscall6(sysFchmodat2, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(mode), uintptr(flags), 0, 0)
	if e != 0 {
		return e
	}
	return nil
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
	return ok && !hasCapFsetid(c.Pid)
}

// hasCapFsetid reads the caller's effective capabilities.
func hasCapFsetid(pid uint32) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(int(pid)) + "/status")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<unix.CAP_FSETID) != 0
		}
	}
	return false
}

// dropPrivs is the mode a write by the caller leaves, as the kernel's
// setattr_should_drop_sgid has it: setuid goes; setgid goes if group
// execute is on or the caller is not in the file's group.
func dropPrivs(ctx context.Context, mode, gid uint32) uint32 {
	m := mode &^ unix.S_ISUID
	if mode&unix.S_ISGID != 0 && (mode&unix.S_IXGRP != 0 || !callerInGroup(ctx, gid)) {
		m &^= unix.S_ISGID
	}
	return m & 07777
}

// callerInGroup reports whether the caller has gid as its group or one
// of its supplementary groups.
func callerInGroup(ctx context.Context, gid uint32) bool {
	c, ok := fuse.FromContext(ctx)
	if !ok {
		return false
	}
	if c.Gid == gid {
		return true
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(int(c.Pid)) + "/status")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Groups:"); ok {
			for _, g := range strings.Fields(v) {
				if n, err := strconv.ParseUint(g, 10, 32); err == nil && uint32(n) == gid {
					return true
				}
			}
		}
	}
	return false
}

func (n *dataNode) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if e := n.writable(); e != 0 {
		return e
	}
	rel := n.t.rel(n.EmbeddedInode())
	defer n.t.owning(rel)()
	e := n.setattr(ctx, f, in, out)
	if e != 0 {
		return e
	}
	if df, ok := f.(*dataFile); ok {
		var x unix.Statx_t
		if statx(df.fd, "", &x) == nil {
			n.t.noteOwn(rel, &x)
		}
	}
	n.attrTimeout(out)
	return 0
}

func (n *dataNode) setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	kill := killsPrivs(ctx, in)
	if df, ok := f.(*dataFile); ok {
		if e := df.Setattr(ctx, in, out); e != 0 {
			return e
		}
		if e := df.Getattr(ctx, out); e != 0 || !kill {
			return e
		}
		if m := dropPrivs(ctx, out.Mode, out.Gid); m != out.Mode&07777 {
			if err := unix.Fchmod(df.fd, m); err != nil {
				return fs.ToErrno(err)
			}
			return df.Getattr(ctx, out)
		}
		return 0
	}
	return n.do(ctx, func(dirfd int, name string) syscall.Errno {
		if m, ok := in.GetMode(); ok {
			if err := fchmodatNoFollow(dirfd, name, m&07777); err != nil {
				return fs.ToErrno(err)
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
			flags := unix.AT_SYMLINK_NOFOLLOW
			if name == "" {
				flags |= unix.AT_EMPTY_PATH
			}
			if err := unix.Fchownat(dirfd, name, u, g, flags); err != nil {
				return fs.ToErrno(err)
			}
		}
		if sz, ok := in.GetSize(); ok {
			if e := truncateAt(dirfd, name, int64(sz)); e != 0 {
				return e
			}
		}
		if ts, ok := setTimes(in); ok {
			var err error
			if name == "" {
				// utimensat has no AT_EMPTY_PATH; the tree root is the
				// dir fd itself, reached through its /proc link.
				err = unix.UtimesNanoAt(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(dirfd), ts, 0)
			} else {
				err = unix.UtimesNanoAt(dirfd, name, ts, unix.AT_SYMLINK_NOFOLLOW)
			}
			if err != nil {
				return fs.ToErrno(err)
			}
		}
		var x unix.Statx_t
		if err := statx(dirfd, name, &x); err != nil {
			return fs.ToErrno(err)
		}
		if kill && x.Mode&unix.S_IFMT == unix.S_IFREG {
			if m := dropPrivs(ctx, uint32(x.Mode), x.Gid); m != uint32(x.Mode)&07777 {
				if err := fchmodatNoFollow(dirfd, name, m); err != nil {
					return fs.ToErrno(err)
				}
				if err := statx(dirfd, name, &x); err != nil {
					return fs.ToErrno(err)
				}
			}
		}
		attrFromStatx(&out.Attr, &x)
		n.t.noteOwn(n.t.rel(n.EmbeddedInode()), &x)
		return 0
	})
}

// setTimes turns the times of a SETATTR into utimensat's, keeping "now"
// as UTIME_NOW (the kernel's clock, not ours).
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

// truncateAt truncates a regular file without following or blocking.
func truncateAt(dirfd int, name string, size int64) syscall.Errno {
	if name == "" {
		return syscall.EISDIR
	}
	// Through O_PATH first: a fifo swapped in is never opened.
	fd, e := openRegular(dirfd, name, unix.O_WRONLY)
	if e == syscall.EACCES {
		return syscall.EINVAL // truncate(2) of a non-regular file
	}
	if e != 0 {
		return e
	}
	defer unix.Close(fd)
	return fs.ToErrno(unix.Ftruncate(fd, size))
}

// openFlags are the open(2) flags passed on to the host file.
const openFlags = unix.O_ACCMODE | unix.O_APPEND | unix.O_NONBLOCK | unix.O_DIRECT | unix.O_SYNC |
	unix.O_DSYNC | unix.O_NOATIME | unix.O_TRUNC

func (n *dataNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&unix.O_ACCMODE != unix.O_RDONLY || flags&unix.O_TRUNC != 0 {
		if e := n.writable(); e != 0 {
			return nil, 0, e
		}
	}
	var fh fs.FileHandle
	errno := n.t.withBase(ctx, func(base int) syscall.Errno {
		fd, e := openRegular(base, n.t.rel(n.EmbeddedInode()), int(flags)&openFlags)
		if e != 0 {
			return e
		}
		fh = n.newFile(fd)
		return 0
	})
	return fh, 0, errno
}

// openRegular opens rel for I/O only if it is a regular file: first as
// O_PATH (no device or fifo is ever opened for real), then, once fstat
// says it is regular, again through its /proc/self/fd link.
func openRegular(base int, rel string, flags int) (int, syscall.Errno) {
	pfd, err := openRel(base, rel, unix.O_PATH|unix.O_NOFOLLOW, 0)
	if err != nil {
		return -1, fs.ToErrno(err)
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if err := unix.Fstat(pfd, &st); err != nil {
		return -1, fs.ToErrno(err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFDIR:
		return -1, syscall.EISDIR
	case unix.S_IFLNK:
		return -1, syscall.ELOOP // swapped in since the lookup: not followed
	default:
		return -1, syscall.EACCES // a device or fifo is never opened for real
	}
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(pfd), flags|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return -1, fs.ToErrno(err)
	}
	return fd, 0
}

// caller is who asked, to own what they create.
func caller(ctx context.Context) (uid, gid int, ok bool) {
	c, ok := fuse.FromContext(ctx)
	if !ok {
		return 0, 0, false
	}
	return int(c.Uid), int(c.Gid), true
}

// chownToCaller gives a new entry to the user who made it (the daemon is
// root; without this every file made through the mount would be root's).
func chownToCaller(ctx context.Context, dirfd int, name string) error {
	uid, gid, ok := caller(ctx)
	if !ok || os.Geteuid() != 0 {
		return nil
	}
	return unix.Fchownat(dirfd, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
}

func (n *dataNode) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if e := n.writable(); e != 0 {
		return nil, nil, 0, e
	}
	var ch *fs.Inode
	var fh fs.FileHandle
	errno := n.changeIn(ctx, name, func(dirfd int) syscall.Errno {
		// O_EXCL first, always: a symlink at name (even a dangling one)
		// is refused, never created through, and a fifo or device
		// planted there is never opened (an open of a fifo would block
		// this request, or connect root to the bot's reader).
		fd, err := unix.Openat(dirfd, name, int(flags)&openFlags|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
		switch {
		case err == nil:
			// Only what this request made becomes the caller's.
			if err := chownToCaller(ctx, dirfd, name); err != nil {
				unix.Close(fd)
				return fs.ToErrno(err)
			}
		case errors.Is(err, unix.EEXIST) && flags&unix.O_EXCL == 0:
			// It was there (made host-side since the kernel's lookup):
			// open(2) semantics, the existing file as it is, if it is a
			// regular file.
			var e syscall.Errno
			if fd, e = openRegular(dirfd, name, int(flags)&openFlags); e != 0 {
				return e
			}
		default:
			return fs.ToErrno(err)
		}
		var x unix.Statx_t
		if err := statx(fd, "", &x); err != nil {
			unix.Close(fd)
			return fs.ToErrno(err)
		}
		attrFromStatx(&out.Attr, &x)
		n.cacheHint(name, out)
		n.t.noteOwn(n.t.relOf(n.EmbeddedInode(), name), &x)
		ch = n.NewInode(ctx, &dataNode{t: n.t}, n.t.stable(&x))
		fh = ch.Operations().(*dataNode).newFile(fd)
		return 0
	})
	return ch, fh, 0, errno
}

func (n *dataNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if e := n.writable(); e != 0 {
		return nil, e
	}
	var ch *fs.Inode
	errno := n.changeIn(ctx, name, func(dirfd int) syscall.Errno {
		if err := unix.Mkdirat(dirfd, name, mode); err != nil {
			return fs.ToErrno(err)
		}
		if err := chownToCaller(ctx, dirfd, name); err != nil {
			return fs.ToErrno(err)
		}
		var e syscall.Errno
		ch, e = n.child(ctx, dirfd, name, out, true)
		return e
	})
	return ch, errno
}

func (n *dataNode) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if e := n.writable(); e != 0 {
		return nil, e
	}
	switch mode & unix.S_IFMT {
	case unix.S_IFIFO, unix.S_IFSOCK, unix.S_IFREG:
	default:
		return nil, syscall.EPERM // no device nodes in bot data
	}
	var ch *fs.Inode
	errno := n.changeIn(ctx, name, func(dirfd int) syscall.Errno {
		if err := unix.Mknodat(dirfd, name, mode, 0); err != nil {
			return fs.ToErrno(err)
		}
		if err := chownToCaller(ctx, dirfd, name); err != nil {
			return fs.ToErrno(err)
		}
		var e syscall.Errno
		ch, e = n.child(ctx, dirfd, name, out, true)
		return e
	})
	return ch, errno
}

func (n *dataNode) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if e := n.writable(); e != 0 {
		return nil, e
	}
	var ch *fs.Inode
	errno := n.changeIn(ctx, name, func(dirfd int) syscall.Errno {
		if err := unix.Symlinkat(target, dirfd, name); err != nil {
			return fs.ToErrno(err)
		}
		if err := chownToCaller(ctx, dirfd, name); err != nil {
			return fs.ToErrno(err)
		}
		var e syscall.Errno
		ch, e = n.child(ctx, dirfd, name, out, true)
		return e
	})
	return ch, errno
}

func (n *dataNode) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if e := n.writable(); e != 0 {
		return nil, e
	}
	tn, ok := target.(*dataNode)
	if !ok || tn.t != n.t {
		return nil, syscall.EXDEV
	}
	var ch *fs.Inode
	if tn.orphan() {
		// An O_TMPFILE file (or a deleted one someone holds open) gets a
		// name through its fd.
		errno := tn.withOpenFd(func(fd int) syscall.Errno {
			return n.changeIn(ctx, name, func(dirfd int) syscall.Errno {
				if err := unix.Linkat(fd, "", dirfd, name, unix.AT_EMPTY_PATH); err != nil {
					return fs.ToErrno(err)
				}
				var e syscall.Errno
				ch, e = n.child(ctx, dirfd, name, out, true)
				return e
			})
		})
		return ch, errno
	}
	errno := tn.do(ctx, func(tdir int, tname string) syscall.Errno {
		if tname == "" {
			return syscall.EPERM
		}
		return n.inDir(ctx, func(dirfd int) syscall.Errno {
			// No AT_SYMLINK_FOLLOW: a symlink is linked as itself.
			if err := unix.Linkat(tdir, tname, dirfd, name, 0); err != nil {
				return fs.ToErrno(err)
			}
			var e syscall.Errno
			ch, e = n.child(ctx, dirfd, name, out, true)
			return e
		})
	})
	return ch, errno
}

func (n *dataNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	var out []byte
	errno := n.do(ctx, func(dirfd int, name string) syscall.Errno {
		for size := 256; ; size *= 2 {
			buf := make([]byte, size)
			k, err := unix.Readlinkat(dirfd, name, buf)
			if err != nil {
				return fs.ToErrno(err)
			}
			if k < size {
				out = buf[:k]
				return 0
			}
		}
	})
	return out, errno
}

func (n *dataNode) Unlink(ctx context.Context, name string) syscall.Errno {
	if e := n.writable(); e != 0 {
		return e
	}
	return n.changeIn(ctx, name, func(dirfd int) syscall.Errno {
		if err := unix.Unlinkat(dirfd, name, 0); err != nil {
			return fs.ToErrno(err)
		}
		n.t.noteOwnGone(n.t.relOf(n.EmbeddedInode(), name))
		return 0
	})
}

func (n *dataNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	if e := n.writable(); e != 0 {
		return e
	}
	return n.changeIn(ctx, name, func(dirfd int) syscall.Errno {
		if err := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR); err != nil {
			return fs.ToErrno(err)
		}
		n.t.noteOwnGone(n.t.relOf(n.EmbeddedInode(), name))
		return 0
	})
}

func (n *dataNode) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if e := n.writable(); e != 0 {
		return e
	}
	np, ok := newParent.(*dataNode)
	if !ok || np.t != n.t {
		return syscall.EXDEV
	}
	oldRel, newRel := n.t.rel(n.EmbeddedInode()), np.t.rel(np.EmbeddedInode())
	defer n.t.owning(oldRel, newRel, n.t.relOf(n.EmbeddedInode(), name), np.t.relOf(np.EmbeddedInode(), newName))()
	return n.inDir(ctx, func(olddir int) syscall.Errno {
		return np.inDir(ctx, func(newdir int) syscall.Errno {
			if err := unix.Renameat2(olddir, name, newdir, newName, uint(flags)); err != nil {
				return fs.ToErrno(err)
			}
			n.noteOwnDir(oldRel, olddir)
			np.noteOwnDir(newRel, newdir)
			if flags&unix.RENAME_EXCHANGE == 0 {
				n.t.noteOwnGone(n.t.relOf(n.EmbeddedInode(), name))
			} else {
				var x unix.Statx_t
				if statx(olddir, name, &x) == nil {
					n.t.noteOwn(n.t.relOf(n.EmbeddedInode(), name), &x)
				}
			}
			var x unix.Statx_t
			if statx(newdir, newName, &x) == nil {
				n.t.noteOwn(np.t.relOf(np.EmbeddedInode(), newName), &x)
			}
			return 0
		})
	})
}

func (n *dataNode) openDir(ctx context.Context) (int, syscall.Errno) {
	fd := -1
	errno := n.t.withBase(ctx, func(base int) syscall.Errno {
		var err error
		fd, err = openRel(base, n.t.rel(n.EmbeddedInode()), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
		return fs.ToErrno(err)
	})
	return fd, errno
}

func (n *dataNode) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fd, errno := n.openDir(ctx)
	if errno != 0 {
		return nil, 0, errno
	}
	pfd, err := unix.Dup(fd)
	if err != nil {
		unix.Close(fd)
		return nil, 0, fs.ToErrno(err)
	}
	ds, errno := fs.NewLoopbackDirStreamFd(fd)
	if errno != 0 {
		unix.Close(pfd)
		return nil, 0, errno
	}
	n.track(pfd)
	// The kernel may cache the listing: changes through the mount drop
	// it, the watcher drops it for changes behind the mount.
	flags = 0
	if !n.t.noCache(n.t.rel(n.EmbeddedInode())) {
		flags = fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE
	}
	return &dirHandle{DirStream: ds, n: n, fd: pfd}, flags, 0
}

var _ fs.FileLookuper = (*dirHandle)(nil)

// Lookup answers READDIRPLUS for an entry just listed, with the open
// directory (no path walk).
func (d *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return d.n.child(ctx, d.fd, name, out, false)
}

// dirHandle is go-fuse's loopback dir stream plus an fd registered with
// the node while the directory is open.
type dirHandle struct {
	fs.DirStream
	n  *dataNode
	fd int
}

var (
	_ fs.FileReaddirenter = (*dirHandle)(nil)
	_ fs.FileSeekdirer    = (*dirHandle)(nil)
	_ fs.FileReleasedirer = (*dirHandle)(nil)
	_ fs.FileFsyncdirer   = (*dirHandle)(nil)
)

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	return d.DirStream.(fs.FileReaddirenter).Readdirent(ctx)
}

func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	return d.DirStream.(fs.FileSeekdirer).Seekdir(ctx, off)
}

func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	return d.DirStream.(fs.FileFsyncdirer).Fsyncdir(ctx, flags)
}

func (d *dirHandle) Releasedir(ctx context.Context, flags uint32) {
	d.DirStream.(fs.FileReleasedirer).Releasedir(ctx, flags)
	d.n.untrack(d.fd)
	unix.Close(d.fd)
}

var _ fs.NodeTmpfiler = (*dataNode)(nil)

// Tmpfile makes an O_TMPFILE file in the directory: nameless until the
// caller links it into place.
func (n *dataNode) Tmpfile(ctx context.Context, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if e := n.writable(); e != 0 {
		return nil, nil, 0, e
	}
	var ch *fs.Inode
	var fh fs.FileHandle
	errno := n.inDir(ctx, func(dirfd int) syscall.Errno {
		fd, err := unix.Openat(dirfd, ".", int(flags)&(openFlags&^unix.O_TRUNC)|unix.O_TMPFILE|unix.O_CLOEXEC, mode)
		if err != nil {
			return fs.ToErrno(err)
		}
		if uid, gid, ok := caller(ctx); ok && os.Geteuid() == 0 {
			if err := unix.Fchown(fd, uid, gid); err != nil {
				unix.Close(fd)
				return fs.ToErrno(err)
			}
		}
		var x unix.Statx_t
		if err := statx(fd, "", &x); err != nil {
			unix.Close(fd)
			return fs.ToErrno(err)
		}
		attrFromStatx(&out.Attr, &x)
		ch = n.NewInode(ctx, &dataNode{t: n.t}, n.t.stable(&x))
		fh = ch.Operations().(*dataNode).newFile(fd)
		return 0
	})
	return ch, fh, 0, errno
}

func (n *dataNode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	fd, errno := n.openDir(ctx)
	if errno != 0 {
		return nil, errno
	}
	return fs.NewLoopbackDirStreamFd(fd)
}

func (n *dataNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	return n.t.withBase(ctx, func(base int) syscall.Errno {
		var s syscall.Statfs_t
		if err := syscall.Fstatfs(base, &s); err != nil {
			return fs.ToErrno(err)
		}
		out.FromStatfsT(&s)
		return 0
	})
}

// Extended attributes: control.DataXattr says which (user.* and POSIX
// ACLs; the kernel checks who may set an ACL before it asks). Others are
// "not supported" and cannot be set, so no caller reaches trusted.* or
// security.* attributes (file capabilities) of host files through root's
// rights.

func xattrAllowed(attr string) bool { return control.DataXattr(attr) }

// xattrPath names n for the l*xattr calls: its dir fd's /proc link plus
// its name, so only the last component is looked up (and not followed).
func xattrPath(dirfd int, name string) string {
	p := "/proc/self/fd/" + strconv.Itoa(dirfd)
	if name != "" {
		p = path.Join(p, name)
	}
	return p
}

func (n *dataNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if !xattrAllowed(attr) {
		// "Not supported" rather than "absent": tools remember it per
		// file system (ls -l asks for security.selinux once per run, not
		// once per file).
		return 0, syscall.EOPNOTSUPP
	}
	var sz int
	errno := n.do(ctx, func(dirfd int, name string) syscall.Errno {
		var err error
		if name == "" {
			sz, err = unix.Getxattr(xattrPath(dirfd, name), attr, dest)
		} else {
			sz, err = unix.Lgetxattr(xattrPath(dirfd, name), attr, dest)
		}
		return fs.ToErrno(err)
	})
	return uint32(sz), errno
}

func (n *dataNode) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if e := n.writable(); e != 0 {
		return e
	}
	if !xattrAllowed(attr) {
		return syscall.EOPNOTSUPP
	}
	return n.changeXattr(ctx, func(p string, follow bool) error {
		if follow {
			return unix.Setxattr(p, attr, data, int(flags))
		}
		return unix.Lsetxattr(p, attr, data, int(flags))
	})
}

func (n *dataNode) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if e := n.writable(); e != 0 {
		return e
	}
	if !xattrAllowed(attr) {
		return syscall.EOPNOTSUPP
	}
	return n.changeXattr(ctx, func(p string, follow bool) error {
		if follow {
			return unix.Removexattr(p, attr)
		}
		return unix.Lremovexattr(p, attr)
	})
}

// changeXattr runs change on n's xattr path (follow: the path is the tree
// root's own /proc link, which must be followed) and notes the result as
// memohfs's own change.
func (n *dataNode) changeXattr(ctx context.Context, change func(p string, follow bool) error) syscall.Errno {
	rel := n.t.rel(n.EmbeddedInode())
	defer n.t.owning(rel)()
	return n.do(ctx, func(dirfd int, name string) syscall.Errno {
		if err := change(xattrPath(dirfd, name), name == ""); err != nil {
			return fs.ToErrno(err)
		}
		var x unix.Statx_t
		if statx(dirfd, name, &x) == nil {
			n.t.noteOwn(rel, &x)
		}
		return 0
	})
}

func (n *dataNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	var list []byte
	errno := n.do(ctx, func(dirfd int, name string) syscall.Errno {
		p := xattrPath(dirfd, name)
		listFn := unix.Llistxattr
		if name == "" {
			listFn = unix.Listxattr
		}
		sz, err := listFn(p, nil)
		if err != nil {
			return fs.ToErrno(err)
		}
		buf := make([]byte, sz)
		sz, err = listFn(p, buf)
		if err != nil {
			return fs.ToErrno(err)
		}
		for _, a := range splitNul(buf[:sz]) {
			if xattrAllowed(a) {
				list = append(append(list, a...), 0)
			}
		}
		return 0
	})
	if errno != 0 {
		return 0, errno
	}
	if len(dest) < len(list) {
		return uint32(len(list)), syscall.ERANGE
	}
	return uint32(copy(dest, list)), 0
}

func splitNul(b []byte) []string {
	var out []string
	start := 0
	for i, c := range b {
		if c == 0 {
			if i > start {
				out = append(out, string(b[start:i]))
			}
			start = i + 1
		}
	}
	return out
}

func (n *dataNode) CopyFileRange(ctx context.Context, fhIn fs.FileHandle, offIn uint64, out *fs.Inode, fhOut fs.FileHandle,
	offOut uint64, length uint64, flags uint64) (uint32, syscall.Errno) {
	in, ok1 := fhIn.(*dataFile)
	o, ok2 := fhOut.(*dataFile)
	if !ok1 || !ok2 {
		return 0, syscall.EXDEV
	}
	if e := n.writable(); e != 0 {
		return 0, e
	}
	return in.copyTo(o, offIn, offOut, length, flags)
}
