package treesync

import (
	"bytes"
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// meta gives the copy (open as dstfd) the owner, xattrs, mode and times of
// the source (open as srcfd, state st). Owner first: chown clears setuid
// bits and file capabilities.
func (t *Tree) meta(srcfd, dstfd int, st *unix.Stat_t) error {
	if err := unix.Fchown(dstfd, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if t.o.Xattr != nil {
		if err := copyXattrs(srcfd, dstfd, t.o.Xattr); err != nil {
			return err
		}
	}
	if err := unix.Fchmod(dstfd, st.Mode&07777); err != nil {
		return err
	}
	return futimens(dstfd, st.Atim, st.Mtim)
}

// metaAt gives the entry name in dstdir (a symlink or a node we just made,
// never followed) the owner, mode and times of st. The mode is left alone
// for a symlink, which has none of its own.
func metaAt(dstdir int, name string, st *unix.Stat_t) error {
	if err := unix.Fchownat(dstdir, name, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		// Not a symlink (we made it, in a directory only we write), so
		// fchmodat's following is moot.
		if err := unix.Fchmodat(dstdir, name, st.Mode&07777, 0); err != nil {
			return err
		}
	}
	return unix.UtimesNanoAt(dstdir, name, []unix.Timespec{st.Atim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW)
}

// futimens sets an open file's times to the nanosecond.
func futimens(fd int, atime, mtime unix.Timespec) error {
	ts := [2]unix.Timespec{atime, mtime}
	_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// copyXattrs makes the extended attributes of dstfd that want accepts
// equal to srcfd's.
func copyXattrs(srcfd, dstfd int, want func(string) bool) error {
	have, err := listXattrs(srcfd)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return nil
		}
		return err
	}
	keep := map[string]bool{}
	for _, name := range have {
		if !want(name) {
			continue
		}
		val, err := getXattr(srcfd, name)
		if errors.Is(err, unix.ENODATA) {
			continue
		}
		if err != nil {
			return fmt.Errorf("xattr %s: %w", name, err)
		}
		if err := unix.Fsetxattr(dstfd, name, val, 0); err != nil {
			return fmt.Errorf("set xattr %s: %w", name, err)
		}
		keep[name] = true
	}
	old, err := listXattrs(dstfd)
	if err != nil {
		return err
	}
	for _, name := range old {
		if want(name) && !keep[name] {
			if err := unix.Fremovexattr(dstfd, name); err != nil && !errors.Is(err, unix.ENODATA) {
				return err
			}
		}
	}
	return nil
}

func listXattrs(fd int) ([]string, error) {
	buf := make([]byte, 1024)
	for {
		n, err := unix.Flistxattr(fd, buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, 2*len(buf))
			continue
		}
		if err != nil {
			return nil, err
		}
		var names []string
		for _, b := range bytes.Split(buf[:n], []byte{0}) {
			if len(b) > 0 {
				names = append(names, string(b))
			}
		}
		return names, nil
	}
}

func getXattr(fd int, name string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Fgetxattr(fd, name, buf)
		if errors.Is(err, unix.ERANGE) {
			sz, err := unix.Fgetxattr(fd, name, nil)
			if err != nil {
				return nil, err
			}
			buf = make([]byte, sz+1)
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}
