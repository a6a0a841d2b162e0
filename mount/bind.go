package mount

import (
	"errors"
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"
)

// A Bind is a directory bind-mounted by memohfs with the new mount API:
// a detached clone of the source (open_tree), its flags set while nobody
// can see it (mount_setattr), then attached onto the target (move_mount).
// Both ends are fds: no path string of a directory a bot controls is ever
// resolved, so a bot that swaps a name for a symlink redirects nothing.
//
// The bind keeps its open_tree fd: Detach unmounts exactly this mount,
// wherever its target is now, and a check can stat its root.
type Bind struct {
	fd int // the mount's root, from open_tree; -1 once detached
}

// BindFlags are the mount attributes every bind of bot data gets: a bot
// can make device nodes, setuid files and symlinks in its data; none of
// them works through the bind (MOUNT_ATTR_NOSYMFOLLOW: a path walk
// through a symlink answers ELOOP; readlink still reads it).
const BindFlags = unix.MOUNT_ATTR_NOSYMFOLLOW | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOSUID

// BindAt bind-mounts the directory open as src onto the directory open
// as target (both fds, O_PATH will do; neither is taken over), with
// BindFlags, read-only if asked, and private propagation: it reaches no
// other mount namespace.
func BindAt(src, target int, readOnly bool) (*Bind, error) {
	fd, err := unix.OpenTree(src, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
	if err != nil {
		return nil, fmt.Errorf("open_tree: %w", err)
	}
	attr := unix.MountAttr{Attr_set: BindFlags, Propagation: unix.MS_PRIVATE}
	if readOnly {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mount_setattr: %w", err)
	}
	if err := unix.MoveMount(fd, "", target, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		unix.Close(fd) // the detached clone goes with its last fd
		return nil, fmt.Errorf("move_mount: %w", err)
	}
	return &Bind{fd: fd}, nil
}

// Fd is the bind's root (an fd of the mounted directory): what a check
// stats to see that the bind still shows what it was made from.
func (b *Bind) Fd() int { return b.fd }

// Detach unmounts the bind (lazily: a process inside it keeps what it
// has) and closes its fd. A bind the kernel detached already (its
// mountpoint was invalidated) is no error.
func (b *Bind) Detach() error {
	if b == nil || b.fd < 0 {
		return nil
	}
	// The magic link names this very mount, wherever it sits; but the
	// walk crosses onto a mount stacked on top of it, and umount takes
	// that one. So: until the bind's own mount id is gone (each round
	// takes the top one off; a stack is a few deep at most).
	id, idErr := mountID(b.fd)
	var err error
	for range 16 {
		err = unix.Unmount("/proc/self/fd/"+strconv.Itoa(b.fd), unix.MNT_DETACH)
		if err != nil || idErr != nil || !attached(id) {
			break
		}
	}
	unix.Close(b.fd)
	b.fd = -1
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("detach the bind: %w", err)
	}
	if idErr == nil && attached(id) {
		return fmt.Errorf("detach the bind: mount %d still attached", id)
	}
	return nil
}

// mountID is the id of the mount fd is on (statx STATX_MNT_ID).
func mountID(fd int) (int, error) {
	var x unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID, &x); err != nil {
		return 0, err
	}
	if x.Mask&unix.STATX_MNT_ID == 0 {
		return 0, errors.New("no STATX_MNT_ID")
	}
	return int(x.Mnt_id), nil
}

// attached says whether mount id is in this namespace's mount table.
func attached(id int) bool {
	ms, err := mounts()
	if err != nil {
		return false
	}
	for _, m := range ms {
		if m.ID == id {
			return true
		}
	}
	return false
}

// Private makes the mount on dir (memohfs's own mount point) private, so
// the binds made under it reach no other mount namespace, and, unless
// follow, nosymfollow: the host follows no symlink under it.
func Private(dir string, follow bool) error {
	attr := unix.MountAttr{Propagation: unix.MS_PRIVATE}
	if !follow {
		attr.Attr_set = unix.MOUNT_ATTR_NOSYMFOLLOW
	}
	if err := unix.MountSetattr(unix.AT_FDCWD, dir, unix.AT_SYMLINK_NOFOLLOW, &attr); err != nil {
		return fmt.Errorf("mount_setattr %s: %w", dir, err)
	}
	return nil
}

// BindsUsable says why binds cannot be made here (nil: they can): they
// need the new mount API (Linux 5.12) and CAP_SYS_ADMIN.
func BindsUsable() error {
	fd, err := unix.OpenTree(unix.AT_FDCWD, "/", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		if errors.Is(err, unix.ENOSYS) {
			return errors.New("the kernel has no open_tree (Linux 5.12 or later needed)")
		}
		if errors.Is(err, unix.EPERM) {
			return errors.New("not allowed to mount (CAP_SYS_ADMIN needed: run as root)")
		}
		return fmt.Errorf("open_tree: %w", err)
	}
	unix.Close(fd)
	return nil
}
