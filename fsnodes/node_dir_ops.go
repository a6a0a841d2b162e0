package fsnodes

import (
	"context"
	"strconv"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/memohfs/memohfs/internal/hostfs"
	"golang.org/x/sys/unix"
)

// The namespace operations of a directory node. Each acts on the entry
// name in the directory's own fd, with the caller's credentials where it
// changes anything: the host applies the sticky bit, the directory's
// permissions, setgid inheritance and the umask for the caller, as on a
// local disk.

var _ fs.NodeLookuper = (*dataNode)(nil)

func (n *dataNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	// Whether the kernel may cache the answer is settled before the host
	// is read: a watch the walk puts after that read would miss a change
	// made in between, and the answer would stay stale for the TTL.
	cached := !n.t.noCache(n.t.relOf(n.EmbeddedInode(), name))
	var ch *fs.Inode
	errno := n.hostFd(ctx, func(dirfd int) syscall.Errno {
		var e syscall.Errno
		ch, e = n.lookupChild(ctx, dirfd, name, out)
		return e
	})
	if errno == 0 && !cached {
		cacheEntry(out, uncached, uncached)
	}
	if errno == syscall.ENOENT {
		if !cached || n.t.noCache(n.t.relOf(n.EmbeddedInode(), name)) {
			noNegative(out)
		} else {
			n.t.negs.note(n.EmbeddedInode(), name, n.t.entryTTL, out)
		}
	}
	return ch, errno
}

// made opens the entry a call just made by name (mkdir, mknod and
// symlink give no fd) without following it, for the reply. The kernel
// needs the reply to be of the type it asked to make (go-fuse panics on a
// MKDIR answered with a file). If the bot swapped the name in between,
// the name holds something else, or nothing:
//
//   - an entry of the right type is answered, as a LOOKUP would, but is
//     noted as memohfs's own change only if it is the caller's;
//   - otherwise what the call made was moved away by the bot: errMoved,
//     and makeEntry makes it again (the caller asked for an entry at this
//     name; what the bot took is the bot's business, as it would be had it
//     taken it a moment later).
func (n *dataNode) made(ctx context.Context, dirfd int, name string, typ uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	fd, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err == unix.ENOENT {
		return nil, errMoved
	}
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	var x unix.Statx_t
	if err := hostfs.Statx(fd, "", &x); err != nil {
		unix.Close(fd)
		return nil, fs.ToErrno(err)
	}
	if uint32(x.Mode)&unix.S_IFMT != typ {
		unix.Close(fd)
		return nil, errMoved
	}
	from := lookedUp
	if c, ok := fuse.FromContext(ctx); !ok || x.Uid == c.Uid {
		from = madeHere // the caller's: what the call made
	}
	return n.childOf(ctx, fd, name, out, from)
}

// errMoved says an entry just made was moved away before it was opened.
const errMoved = syscall.Errno(0x7fff)

// makeAttempts bounds how often makeEntry makes an entry the bot keeps
// moving away; after that the call answers ESTALE (the kernel tries the
// whole call once more).
const makeAttempts = 4

// makeEntry runs mk, which makes the entry name of type typ in n's fd,
// as the caller with umask, and returns the node of what it made.
func (n *dataNode) makeEntry(ctx context.Context, name string, typ, umask uint32, out *fuse.EntryOut, mk func(dirfd int) error) (*fs.Inode, syscall.Errno) {
	if e := n.writable(); e != 0 {
		return nil, e
	}
	var ch *fs.Inode
	errno := n.changeIn(ctx, name, func(dirfd int) syscall.Errno {
		for range makeAttempts {
			if e := n.asCaller(ctx, makesEntry, umask, func() error { return mk(dirfd) }); e != 0 {
				return e
			}
			var e syscall.Errno
			if ch, e = n.made(ctx, dirfd, name, typ, out); e != errMoved {
				return e
			}
		}
		return syscall.ESTALE
	})
	return ch, errno
}

var _ fs.NodeMkdirer = (*dataNode)(nil)

func (n *dataNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	mode, umask := modeAndUmask(mode)
	return n.makeEntry(ctx, name, unix.S_IFDIR, umask, out, func(dirfd int) error {
		return unix.Mkdirat(dirfd, name, mode&0o7777)
	})
}

var _ fs.NodeMknoder = (*dataNode)(nil)

// Mknod makes fifos, sockets, regular files and, for a caller the host
// lets (CAP_MKNOD), device nodes: `tar x` or `cp -a` of a root file
// system works as on ext4. Every mount of bot data is nodev, so a device
// node made here opens nothing, on the host or in the bot.
func (n *dataNode) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	mode, umask := modeAndUmask(mode)
	typ := mode & unix.S_IFMT
	if typ == 0 {
		typ = unix.S_IFREG // mknod(2): a zero type is a regular file
	}
	return n.makeEntry(ctx, name, typ, umask, out, func(dirfd int) error {
		return unix.Mknodat(dirfd, name, mode, int(rdev))
	})
}

var _ fs.NodeSymlinker = (*dataNode)(nil)

func (n *dataNode) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return n.makeEntry(ctx, name, unix.S_IFLNK, 0, out, func(dirfd int) error {
		return unix.Symlinkat(target, dirfd, name)
	})
}

var _ fs.NodeLinker = (*dataNode)(nil)

// Link gives the target's file another name, through the target's fd
// (its /proc/self/fd link, followed once: it names the file itself, a
// symlink or an O_TMPFILE file included), as the caller, so the host's
// protected_hardlinks rule applies to them.
func (n *dataNode) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if e := n.writable(); e != 0 {
		return nil, e
	}
	tn, ok := target.(*dataNode)
	if !ok || tn.t != n.t || tn.root {
		return nil, syscall.EXDEV
	}
	var ch *fs.Inode
	errno := tn.hostFd(ctx, func(tfd int) syscall.Errno {
		return n.changeIn(ctx, name, func(dirfd int) syscall.Errno {
			if e := n.asCaller(ctx, makesEntry, 0, func() error {
				return unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(tfd), dirfd, name, unix.AT_SYMLINK_FOLLOW)
			}); e != 0 {
				return e
			}
			// The new name is the target's own node (one node, one fd,
			// per file), with its attributes as they are now.
			var x unix.Statx_t
			if err := hostfs.Statx(tfd, "", &x); err != nil {
				return fs.ToErrno(err)
			}
			n.t.noteOwn(n.t.relOf(n.EmbeddedInode(), name), &x)
			attrFromStatx(&out.Attr, &x)
			n.cacheHint(name, out)
			ch = tn.EmbeddedInode()
			return 0
		})
	})
	return ch, errno
}

var _ fs.NodeReadlinker = (*dataNode)(nil)

func (n *dataNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	var out []byte
	errno := n.hostFd(ctx, func(fd int) syscall.Errno {
		for size := 256; ; size *= 2 {
			buf := make([]byte, size)
			k, err := unix.Readlinkat(fd, "", buf)
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

var _ fs.NodeUnlinker = (*dataNode)(nil)

func (n *dataNode) Unlink(ctx context.Context, name string) syscall.Errno {
	return n.remove(ctx, name, 0)
}

var _ fs.NodeRmdirer = (*dataNode)(nil)

func (n *dataNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	return n.remove(ctx, name, unix.AT_REMOVEDIR)
}

// remove unlinks name as the caller: the host applies the sticky bit to
// whatever the name holds now.
func (n *dataNode) remove(ctx context.Context, name string, flags int) syscall.Errno {
	if e := n.writable(); e != 0 {
		return e
	}
	return n.changeIn(ctx, name, func(dirfd int) syscall.Errno {
		if e := n.asCaller(ctx, makesNothing, 0, func() error {
			return unix.Unlinkat(dirfd, name, flags)
		}); e != 0 {
			return e
		}
		n.t.noteOwnGone(n.t.relOf(n.EmbeddedInode(), name))
		return 0
	})
}

var _ fs.NodeRenamer = (*dataNode)(nil)

func (n *dataNode) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if e := n.writable(); e != 0 {
		return e
	}
	np, ok := newParent.(*dataNode)
	if !ok || np.t != n.t {
		return syscall.EXDEV
	}
	oldRel, newRel := n.t.rel(n.EmbeddedInode()), np.t.rel(np.EmbeddedInode())
	oldName, newFull := n.t.relOf(n.EmbeddedInode(), name), np.t.relOf(np.EmbeddedInode(), newName)
	defer n.t.owning(oldRel, newRel, oldName, newFull)()
	return n.hostFd(ctx, func(olddir int) syscall.Errno {
		withNew := np.hostFd
		if np == n {
			// The same fd: never take the node's lock twice.
			withNew = func(_ context.Context, fn func(int) syscall.Errno) syscall.Errno { return fn(olddir) }
		}
		return withNew(ctx, func(newdir int) syscall.Errno {
			if e := n.asCaller(ctx, makesNothing, 0, func() error {
				return unix.Renameat2(olddir, name, newdir, newName, uint(flags))
			}); e != 0 {
				return e
			}
			n.noteOwnDir(oldRel, olddir)
			np.noteOwnDir(newRel, newdir)
			var x unix.Statx_t
			if flags&unix.RENAME_EXCHANGE == 0 {
				n.t.noteOwnGone(oldName)
			} else if hostfs.Statx(olddir, name, &x) == nil {
				n.t.noteOwn(oldName, &x)
			}
			if hostfs.Statx(newdir, newName, &x) == nil {
				n.t.noteOwn(newFull, &x)
			}
			return 0
		})
	})
}

// openDir opens the directory for reading, through its fd.
func (n *dataNode) openDir(ctx context.Context) (int, syscall.Errno) {
	fd := -1
	errno := n.hostFd(ctx, func(pfd int) syscall.Errno {
		var err error
		fd, err = unix.Openat(pfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		return fs.ToErrno(err)
	})
	return fd, errno
}

var _ fs.NodeOpendirHandler = (*dataNode)(nil)

func (n *dataNode) OpendirHandle(ctx context.Context, _ uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fd, errno := n.openDir(ctx)
	if errno != 0 {
		return nil, 0, errno
	}
	lfd, err := unix.Dup(fd)
	if err != nil {
		unix.Close(fd)
		return nil, 0, fs.ToErrno(err)
	}
	ds, errno := fs.NewLoopbackDirStreamFd(fd)
	if errno != 0 {
		unix.Close(lfd)
		return nil, 0, errno
	}
	// The kernel may cache the listing: changes through the mount drop
	// it, the watcher drops it for changes behind the mount.
	var flags uint32
	if !n.t.noCache(n.t.rel(n.EmbeddedInode())) {
		flags = fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE
	}
	return &dirHandle{DirStream: ds, n: n, fd: lfd}, flags, 0
}

// dirHandle is go-fuse's loopback dir stream plus the open directory's
// fd, for the lookups of READDIRPLUS.
type dirHandle struct {
	fs.DirStream
	n  *dataNode
	fd int
}

var _ fs.FileLookuper = (*dirHandle)(nil)

// Lookup answers READDIRPLUS for an entry just listed, in the open
// directory.
func (d *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	cached := !d.n.t.noCache(d.n.t.relOf(d.n.EmbeddedInode(), name)) // see dataNode.Lookup
	ch, e := d.n.lookupChild(ctx, d.fd, name, out)
	if e == 0 && !cached {
		cacheEntry(out, uncached, uncached)
	}
	return ch, e
}

var _ fs.FileReaddirenter = (*dirHandle)(nil)

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	return d.DirStream.(fs.FileReaddirenter).Readdirent(ctx)
}

var _ fs.FileSeekdirer = (*dirHandle)(nil)

func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	return d.DirStream.(fs.FileSeekdirer).Seekdir(ctx, off)
}

var _ fs.FileFsyncdirer = (*dirHandle)(nil)

func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	return d.DirStream.(fs.FileFsyncdirer).Fsyncdir(ctx, flags)
}

var _ fs.FileReleasedirer = (*dirHandle)(nil)

func (d *dirHandle) Releasedir(ctx context.Context, flags uint32) {
	d.DirStream.(fs.FileReleasedirer).Releasedir(ctx, flags)
	unix.Close(d.fd)
}

var _ fs.NodeReaddirer = (*dataNode)(nil)

func (n *dataNode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	fd, errno := n.openDir(ctx)
	if errno != 0 {
		return nil, errno
	}
	return fs.NewLoopbackDirStreamFd(fd)
}

var _ fs.NodeStatfser = (*dataNode)(nil)

func (n *dataNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	return n.hostFd(ctx, func(fd int) syscall.Errno {
		var s syscall.Statfs_t
		if err := syscall.Fstatfs(fd, &s); err != nil {
			return fs.ToErrno(err)
		}
		out.FromStatfsT(&s)
		return 0
	})
}
