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

// noBeneath makes FUSE.Attach clear a stale mount first, as on a kernel
// without MOVE_MOUNT_BENEATH (for tests of that path).
var noBeneath = false

// FUSEOptions describe a FUSE mount made by NewFUSE and FUSE.Attach.
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
	// Root, if set, names a dir in the filesystem's root: the mount point
	// shows it rather than the root. The kernel makes a FUSE root inode
	// before INIT says whether the server handles POSIX ACLs, and marks
	// it ACL_DONT_CACHE for good, so with FUSE_POSIX_ACL every path walk
	// by someone not its owner asks the server for the root's ACL (a
	// GETXATTR round trip, and the walk leaves RCU mode). A dir below
	// the root is looked up after INIT and its ACL is cached.
	Root string
}

// Replaced says what Attach found on the mount point and did with it.
type Replaced string

const (
	Fresh   Replaced = ""        // dir had no mount
	Beneath Replaced = "beneath" // a stale mount, replaced from beneath: dir was never bare
	Cleared Replaced = "cleared" // a stale mount, cleared before mounting (the kernel cannot mount beneath)
)

// FUSE is a FUSE filesystem made with the new mount API (fsopen,
// fsconfig, fsmount) and not yet attached: NewFUSE makes it, a server
// starts reading Dev, and Attach puts it on the mount point.
//
//	f, _ := mount.NewFUSE("/memoh", mount.FUSEOptions{Name: "memohfs", Root: "bots"})
//	server, _ := fuse.NewServer(fs, f.DevPath(), &opts) // owns f.Dev now
//	go server.Serve()
//	how, _ := f.Attach() // /memoh shows the filesystem's dir "bots"
type FUSE struct {
	// Dev is the /dev/fuse fd the server reads (close-on-exec).
	Dev int
	dir string
	st  State
	o   FUSEOptions
	mnt int // the filesystem's root, detached; -1 once attached or closed
}

// NewFUSE makes a FUSE filesystem to attach on dir later. A live mount
// on dir is an error; a stale one (its server died, or hangs: see Check)
// is left for Attach to replace.
func NewFUSE(dir string, o FUSEOptions) (*FUSE, error) {
	st, err := Check(dir)
	if err != nil {
		return nil, err
	}
	if st == Mounted {
		typ, _ := fstype(dir)
		return nil, fmt.Errorf("%s is mounted already (%s): unmount it first (memohfs umount %s)", dir, typ, dir)
	}
	if st == NotMounted {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
	}
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/fuse: %w", err)
	}
	mnt, err := fuseMount(fd, o)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &FUSE{Dev: fd, dir: dir, st: st, o: o, mnt: mnt}, nil
}

// DevPath names Dev as go-fuse takes a mount it did not make.
func (f *FUSE) DevPath() string { return "/dev/fd/" + strconv.Itoa(f.Dev) }

// Close lets go of a filesystem never attached: with no mount left the
// kernel ends its connection, and the server reading Dev stops. Dev is
// the server's to close.
func (f *FUSE) Close() {
	if f.mnt >= 0 {
		unix.Close(f.mnt)
		f.mnt = -1
	}
}

// Attach puts the filesystem (its dir FUSEOptions.Root) on the mount
// point. Its server must be serving Dev: Attach's first request waits for
// INIT to be answered.
//
// A stale mount on the mount point is replaced without the mount point
// ever showing the directory under it: its connection is aborted
// (whatever waits on it gets ECONNABORTED), the new mount goes beneath
// it, and it is then detached with everything mounted under it (the
// binds of the dead server). Until that detach a call on the mount point
// meets the old mount and fails (ENOTCONN); it never lands in the bare
// directory, where a mkdir or a write would go to the host disk and be
// hidden by the new mount. A kernel that cannot mount beneath (before
// 6.5) gets the stale mount cleared first, with that gap (Cleared).
func (f *FUSE) Attach() (how Replaced, err error) {
	defer f.Close()
	if err := f.pollHack(); err != nil {
		return "", err
	}
	mnt := f.mnt
	if f.o.Root != "" {
		// A copy of the mount, rooted at the dir: the kernel looks it up
		// now, after INIT (see FUSEOptions.Root).
		sub, err := unix.OpenTree(f.mnt, f.o.Root, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_SYMLINK_NOFOLLOW)
		if err != nil {
			return "", fmt.Errorf("open %s of the new mount: %w", f.o.Root, err)
		}
		defer unix.Close(sub)
		mnt = sub
	}
	dir := f.dir
	how = Fresh
	if f.st == Stale {
		abort(dir)
		err = unix.EINVAL
		if !noBeneath {
			err = unix.MoveMount(mnt, "", unix.AT_FDCWD, dir, unix.MOVE_MOUNT_F_EMPTY_PATH|moveMountBeneath)
		}
		switch {
		case err == nil:
			// The stale mount is on top: detach it, and its submounts.
			if err := unix.Unmount(dir, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil {
				// ours, under it, goes stale: the next up clears it
				return "", fmt.Errorf("detach the stale mount on %s: %w", dir, err)
			}
			return Beneath, nil
		case errors.Is(err, unix.EINVAL):
			if err := clearStale(dir); err != nil {
				return "", err
			}
			how = Cleared
		default:
			return "", fmt.Errorf("mount %s beneath the stale mount: %w", dir, err)
		}
	}
	if err := unix.MoveMount(mnt, "", unix.AT_FDCWD, dir, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return "", fmt.Errorf("mount %s: %w", dir, err)
	}
	return how, nil
}

// pollHack asks the new filesystem for the file go-fuse answers with
// ENOSYS to POLL (so the kernel never polls a file of the mount, a
// request Go's runtime could starve), what go-fuse does after its own
// mount. go-fuse knows that name only in the filesystem's root.
func (f *FUSE) pollHack() error {
	fd, err := unix.Openat(f.mnt, ".go-fuse-epoll-hack", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("first request to the mount: %w", err)
	}
	unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLPRI | unix.POLLOUT}}, 0)
	unix.Close(fd)
	return nil
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
