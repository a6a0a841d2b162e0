// Package hostfs holds the host-file calls both faces of a data tree
// make (fsnodes' dataNode for FUSE, internal/ninep's fids for 9P): paths
// opened beneath a directory fd without following any link, stats that
// never follow one, and files reopened through their own fd, never by a
// path a bot controls. A device or fifo is never opened.
package hostfs

import (
	"errors"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// toErrno is err as an errno (EIO when it is none).
func toErrno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.EIO
}

// ResolveFlags is how every path beneath a tree is walked: never out of
// it, never through a symlink or a magic link.
const ResolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// OpenBeneath opens rel beneath the directory open as dir (a tree's
// base, a node's directory), refusing symlinks on the way.
func OpenBeneath(dir int, rel string, flags int, mode uint32) (int, error) {
	for {
		fd, err := unix.Openat2(dir, rel, &unix.OpenHow{
			Flags: uint64(flags | unix.O_CLOEXEC), Mode: uint64(mode), Resolve: ResolveFlags,
		})
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue // a rename raced the lookup; resolve again
		}
		if errors.Is(err, unix.EXDEV) {
			return -1, unix.ENOENT // escaping paths do not exist here
		}
		return fd, err
	}
}

// StatxMask is what Statx asks for: the basic stats and the birth time.
const StatxMask = unix.STATX_BASIC_STATS | unix.STATX_BTIME

// Statx stats name in dirfd without following it ("" = dirfd itself).
func Statx(dirfd int, name string, x *unix.Statx_t) error {
	flags := unix.AT_SYMLINK_NOFOLLOW | unix.AT_STATX_SYNC_AS_STAT
	if name == "" {
		flags |= unix.AT_EMPTY_PATH
	}
	return unix.Statx(dirfd, name, flags, StatxMask, x)
}

// Reopen opens the file an O_PATH fd holds again, through its
// /proc/self/fd link (which names the file itself, never a path to it).
// Callers check first that it is a regular file or a directory, or ask
// for O_PATH: a device or fifo is never opened.
func Reopen(fd, flags int) (int, error) {
	return unix.Open("/proc/self/fd/"+strconv.Itoa(fd), flags|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
}

const sysFchmodat2 = 452 // fchmodat2(2), Linux 6.6: honours AT_EMPTY_PATH and AT_SYMLINK_NOFOLLOW

// Fchmodat2 is fchmodat2(2): chmod of dirfd itself (AT_EMPTY_PATH), or
// of name in it without following it.
func Fchmodat2(dirfd int, name string, mode uint32, flags int) error {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return err
	}
	_, _, e := unix.Syscall6(sysFchmodat2, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(mode), uintptr(flags), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// RegularFile answers 0 if the O_PATH fd holds a regular file, else the
// errno an open of it gets here: a directory is EISDIR, a symlink ELOOP,
// and a device, fifo or socket EACCES (never opened for real: an open
// of a fifo would block this request or connect root to the bot's
// reader).
func RegularFile(fd int) syscall.Errno {
	var x unix.Statx_t
	if err := Statx(fd, "", &x); err != nil {
		return toErrno(err)
	}
	switch x.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return 0
	case unix.S_IFDIR:
		return syscall.EISDIR
	case unix.S_IFLNK:
		return syscall.ELOOP
	}
	return syscall.EACCES
}

// PathFd gives an O_PATH fd of the file open as fd (one just made), for
// the node that holds it; on failure it closes fd.
func PathFd(fd int) (int, syscall.Errno) {
	pfd, err := Reopen(fd, unix.O_PATH)
	if err != nil {
		unix.Close(fd)
		return -1, toErrno(err)
	}
	return pfd, 0
}
