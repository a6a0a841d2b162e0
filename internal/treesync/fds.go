package treesync

import (
	"errors"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Every call here takes a directory fd and one name (or, for the copy's
// own tree, a relative path resolved beneath an fd without following
// anything): no absolute path reaches the kernel, so depth is bounded by
// the fds held (one per level and tree), never by PATH_MAX.

const (
	dirFlags  = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	pathFlags = unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC
)

// openDir opens the directory name in dirfd for reading. O_DIRECTORY makes
// the kernel refuse anything else (ENOTDIR; ELOOP for a symlink) before it
// opens it: a fifo or device swapped in at the name is never opened.
func openDir(dirfd int, name string) (int, error) {
	return unix.Openat(dirfd, name, dirFlags, 0)
}

// openRegular opens name in dirfd for reading only if it is, at the moment
// of the open, the regular file want describes (same inode): it takes an
// O_PATH fd (which opens nothing: no driver, fifo or lease is touched),
// checks what that fd refers to, and only then opens that very inode again
// through /proc/self/fd. Anything else, including a name swapped since
// want was taken, is errChanged; now is what the O_PATH fd showed.
func openRegular(dirfd int, name string, want *unix.Stat_t) (fd int, now unix.Stat_t, err error) {
	pfd, err := unix.Openat(dirfd, name, pathFlags, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return -1, now, errChanged
		}
		return -1, now, err
	}
	defer unix.Close(pfd)
	if err := unix.Fstat(pfd, &now); err != nil {
		return -1, now, err
	}
	if now.Mode&unix.S_IFMT != unix.S_IFREG || now.Ino != want.Ino || now.Dev != want.Dev {
		return -1, now, errChanged
	}
	fd, err = unix.Open("/proc/self/fd/"+strconv.Itoa(pfd), unix.O_RDONLY|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, now, err
	}
	return fd, now, nil
}

// withDirBeneath runs f with an fd of the directory rel (slash-separated,
// "" for root itself) beneath root, resolved without following symlinks
// or leaving root. A long rel is resolved a few components at a time, so
// it may exceed PATH_MAX; at most two fds are open at once.
func withDirBeneath(root int, rel string, f func(dirfd int) error) error {
	if rel == "" {
		return f(root)
	}
	how := unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	}
	cur := root
	defer func() {
		if cur != root {
			unix.Close(cur)
		}
	}()
	parts := strings.Split(rel, "/")
	for len(parts) > 0 {
		// A name is at most 255 bytes: a chunk stays well under PATH_MAX.
		n, size := 0, 0
		for n < len(parts) && (n == 0 || size+len(parts[n])+1 < 2048) {
			size += len(parts[n]) + 1
			n++
		}
		next, err := unix.Openat2(cur, strings.Join(parts[:n], "/"), &how)
		if err != nil {
			return err
		}
		if cur != root {
			unix.Close(cur)
		}
		cur, parts = next, parts[n:]
	}
	return f(cur)
}

// removeAllAt removes name in dirfd and, for a directory, everything in
// it, depth first with one fd per level. A name already gone is no error.
func removeAllAt(dirfd int, name string) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) {
		return err
	}
	fd, err := openDir(dirfd, name)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return err
	}
	names, err := readNames(fd)
	for _, n := range names {
		if err == nil {
			err = removeAllAt(fd, n)
		}
	}
	unix.Close(fd)
	if err != nil {
		return err
	}
	if err := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}

// readNames lists an open directory (through a dup: os.File owns its fd,
// and the dup is closed before this returns).
func readNames(dirfd int) ([]string, error) {
	dup, err := unix.Dup(dirfd)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dup), "dir")
	defer f.Close()
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return f.Readdirnames(-1)
}

func readlinkat(dirfd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}
