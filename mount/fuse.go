package mount

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// moveMountBeneath is MOVE_MOUNT_BENEATH (Linux 6.5): move_mount puts
// the mount under the one on top of the target, not over it.
const moveMountBeneath = 0x200

// noBeneath makes MountFUSE clear a stale mount first, as on a kernel
// without MOVE_MOUNT_BENEATH (for tests of that path).
var noBeneath = false

// FUSEOptions describe a FUSE mount made by MountFUSE.
type FUSEOptions struct {
	// Name is the mount's source and subtype: it shows as fuse.Name.
	Name string
	// AllowOther lets users other than the mounter in.
	AllowOther bool
	// DefaultPermissions: the kernel checks modes itself.
	DefaultPermissions bool
	// MaxRead caps a read request (0: the kernel's default).
	MaxRead int
	// Attrs are MOUNT_ATTR_* flags beyond MOUNT_ATTR_NOSUID and
	// MOUNT_ATTR_NODEV, which every FUSE mount here gets.
	Attrs uint64
}

// Replaced says what MountFUSE found on dir and did with it.
type Replaced string

const (
	Fresh   Replaced = ""        // dir had no mount
	Beneath Replaced = "beneath" // a stale mount, replaced from beneath: dir was never bare
	Cleared Replaced = "cleared" // a stale mount, cleared before mounting (the kernel cannot mount beneath)
)

// MountFUSE makes a FUSE mount on dir with the new mount API (fsopen,
// fsconfig, fsmount, move_mount) and returns the /dev/fuse fd its server
// reads (close-on-exec; the mount's INIT request waits on it). A live
// mount on dir is an error.
//
// A stale mount on dir (its server died, or hangs: see Check) is
// replaced without dir ever showing the directory under it: its
// connection is aborted (whatever waits on it gets ECONNABORTED), the new
// mount goes beneath it, and it is then detached with everything mounted
// under it (the binds of the dead server). Until that detach a call on
// dir meets the old mount and fails (ENOTCONN); it never lands in the
// bare directory, where a mkdir or a write would go to the host disk and
// be hidden by the new mount. A kernel that cannot mount beneath (before
// 6.5) gets the stale mount cleared first, with that gap (Cleared).
func MountFUSE(dir string, o FUSEOptions) (fd int, how Replaced, err error) {
	st, err := Check(dir)
	if err != nil {
		return -1, "", err
	}
	if st == Mounted {
		typ, _ := fstype(dir)
		return -1, "", fmt.Errorf("%s is mounted already (%s): unmount it first (memohfs umount %s)", dir, typ, dir)
	}
	if st == NotMounted {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return -1, "", err
		}
	}
	fd, err = unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, "", fmt.Errorf("open /dev/fuse: %w", err)
	}
	mnt, err := fuseMount(fd, o)
	if err != nil {
		unix.Close(fd)
		return -1, "", err
	}
	defer unix.Close(mnt) // attached, the mount no longer needs it
	how = Fresh
	if st == Stale {
		abort(dir)
		err = unix.EINVAL
		if !noBeneath {
			err = unix.MoveMount(mnt, "", unix.AT_FDCWD, dir, unix.MOVE_MOUNT_F_EMPTY_PATH|moveMountBeneath)
		}
		switch {
		case err == nil:
			how = Beneath
			// The stale mount is on top: detach it, and its submounts.
			if err := unix.Unmount(dir, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil {
				unix.Close(fd) // ours, under it, goes stale: the next up clears it
				return -1, "", fmt.Errorf("detach the stale mount on %s: %w", dir, err)
			}
			return fd, how, nil
		case errors.Is(err, unix.EINVAL):
			if err := clearStale(dir); err != nil {
				unix.Close(fd)
				return -1, "", err
			}
			how = Cleared
		default:
			unix.Close(fd)
			return -1, "", fmt.Errorf("mount %s beneath the stale mount: %w", dir, err)
		}
	}
	if err := unix.MoveMount(mnt, "", unix.AT_FDCWD, dir, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		unix.Close(fd)
		return -1, "", fmt.Errorf("mount %s: %w", dir, err)
	}
	return fd, how, nil
}

// fuseMount makes a detached FUSE mount served through fd.
func fuseMount(fd int, o FUSEOptions) (int, error) {
	fsfd, err := unix.Fsopen("fuse", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("fsopen fuse: %w", err)
	}
	defer unix.Close(fsfd)
	set := func(k, v string) error {
		if err := unix.FsconfigSetString(fsfd, k, v); err != nil {
			return fmt.Errorf("fsconfig %s=%s: %w", k, v, err)
		}
		return nil
	}
	flag := func(k string) error {
		if err := unix.FsconfigSetFlag(fsfd, k); err != nil {
			return fmt.Errorf("fsconfig %s: %w", k, err)
		}
		return nil
	}
	errs := []error{
		set("source", o.Name),
		set("subtype", o.Name),
		set("fd", strconv.Itoa(fd)),
		set("rootmode", strconv.FormatUint(unix.S_IFDIR, 8)),
		set("user_id", strconv.Itoa(os.Geteuid())),
		set("group_id", strconv.Itoa(os.Getegid())),
	}
	if o.MaxRead > 0 {
		errs = append(errs, set("max_read", strconv.Itoa(o.MaxRead)))
	}
	if o.AllowOther {
		errs = append(errs, flag("allow_other"))
	}
	if o.DefaultPermissions {
		errs = append(errs, flag("default_permissions"))
	}
	if err := errors.Join(errs...); err != nil {
		return -1, err
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return -1, fmt.Errorf("fsconfig create: %w", err)
	}
	mnt, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, int(unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|o.Attrs))
	if err != nil {
		return -1, fmt.Errorf("fsmount: %w", err)
	}
	return mnt, nil
}

// PollHack asks the fresh FUSE mount on dir for the file go-fuse answers
// with ENOSYS to POLL (so the kernel never polls a file of the mount, a
// request Go's runtime could starve), what go-fuse does after its own
// mount; and, as it needs INIT answered first, waits for the server.
func PollHack(dir string) error {
	fd, err := unix.Open(dir+"/.go-fuse-epoll-hack", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("first request to the mount: %w", err)
	}
	unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLPRI | unix.POLLOUT}}, 0)
	unix.Close(fd)
	return nil
}
