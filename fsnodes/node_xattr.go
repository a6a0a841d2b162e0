package fsnodes

import (
	"context"
	"strconv"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/memohfs/memohfs/control"
	"github.com/memohfs/memohfs/internal/hostfs"
	"golang.org/x/sys/unix"
)

// Extended attributes: control.DataXattr says which (user.* and POSIX
// ACLs; the kernel checks who may set an ACL before it asks). Others are
// "not supported" and cannot be set, so no caller reaches trusted.* or
// security.* attributes (file capabilities) of host files through root's
// rights.
//
// They go through the node's /proc/self/fd link, followed once: it names
// the file itself, whatever it is (a symlink's own attributes, a fifo's
// without opening it). The *xattrat calls of Linux 6.13 refuse O_PATH
// fds with AT_EMPTY_PATH, and f*xattr would need the file open.

func xattrAllowed(attr string) bool { return control.DataXattr(attr) }

// fdPath names the file an O_PATH fd holds.
func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

var _ fs.NodeGetxattrer = (*dataNode)(nil)

func (n *dataNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if !xattrAllowed(attr) {
		// "Not supported" rather than "absent": tools remember it per
		// file system (ls -l asks for security.selinux once per run, not
		// once per file).
		return 0, syscall.EOPNOTSUPP
	}
	var sz int
	errno := n.hostFd(ctx, func(fd int) syscall.Errno {
		var err error
		sz, err = unix.Getxattr(fdPath(fd), attr, dest)
		return fs.ToErrno(err)
	})
	return uint32(sz), errno
}

var _ fs.NodeSetxattrer = (*dataNode)(nil)

func (n *dataNode) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if e := n.writable(); e != 0 {
		return e
	}
	if !xattrAllowed(attr) {
		return syscall.EOPNOTSUPP
	}
	return n.changeXattr(ctx, func(p string) error { return unix.Setxattr(p, attr, data, int(flags)) })
}

var _ fs.NodeRemovexattrer = (*dataNode)(nil)

func (n *dataNode) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if e := n.writable(); e != 0 {
		return e
	}
	if !xattrAllowed(attr) {
		return syscall.EOPNOTSUPP
	}
	return n.changeXattr(ctx, func(p string) error { return unix.Removexattr(p, attr) })
}

// changeXattr runs change on n's fd path as the caller (the host checks
// that they may write the file, or own it for an ACL) and notes the
// result as memohfs's own change.
func (n *dataNode) changeXattr(ctx context.Context, change func(p string) error) syscall.Errno {
	rel := n.t.rel(n.EmbeddedInode())
	defer n.t.owning(rel)()
	return n.hostFd(ctx, func(fd int) syscall.Errno {
		if e := n.asCaller(ctx, makesNothing, 0, func() error { return change(fdPath(fd)) }); e != 0 {
			return e
		}
		var x unix.Statx_t
		if hostfs.Statx(fd, "", &x) == nil {
			n.t.noteOwn(rel, &x)
		}
		return 0
	})
}

var _ fs.NodeListxattrer = (*dataNode)(nil)

func (n *dataNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	var list []byte
	errno := n.hostFd(ctx, func(fd int) syscall.Errno {
		p := fdPath(fd)
		sz, err := unix.Listxattr(p, nil)
		if err != nil {
			return fs.ToErrno(err)
		}
		buf := make([]byte, sz)
		sz, err = unix.Listxattr(p, buf)
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
