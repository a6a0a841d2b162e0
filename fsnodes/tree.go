package fsnodes

import (
	"context"
	"hash/fnv"
	"path"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/memohfs/memohfs/internal/creds"
	"github.com/memohfs/memohfs/internal/hostfs"
	"golang.org/x/sys/unix"
)

// A tree serves a host directory it does not trust (a bot's data dir, a
// snapshot's copy of it, a snapshot's rootfs) as a subtree of the mount.
//
// Each node holds its host file open as an O_PATH fd, taken from its
// parent's fd without following links (see dataNode); the root node
// holds none of its own and uses the tree's (withBase: the base
// directory's fd, or the prefix opened beneath it for each call). A
// symlink anywhere in the tree, planted by the bot or swapped in during
// an operation, is never followed by the daemon: symlinks are returned
// to the kernel, which resolves them in the caller's context with the
// caller's rights (and, with nosymfollow on the mount, refuses to).
type tree struct {
	id       uint64 // mixed into inode generations: trees never share inodes
	readOnly bool
	// resolve gives the trusted base directory (created by memohfs or the
	// runtime); it may be slow (a snapshot view is mounted on first use).
	resolve func(ctx context.Context) (string, error)
	// prefix is a path inside base where the tree starts (".skills");
	// it is resolved like any other path, so it may not be a symlink.
	prefix string
	// uncached marks paths (relative to base) the kernel must not cache:
	// those another tree shows too (data/.skills is skills/), so a change
	// through one view is seen at once through the other.
	uncached func(rel string) bool
	// entryTTL and attrTTL are how long the kernel may cache entries and
	// attributes of the tree (changes behind its back are pushed by
	// invalidation).
	entryTTL, attrTTL time.Duration

	mu      sync.RWMutex
	baseFd  int // O_PATH fd of the base dir; -1 until resolved
	baseDev uint64
	// mountFd is the base dir opened for reading (open_by_handle_at
	// takes no O_PATH fd for the filesystem): -1 with baseFd.
	mountFd int

	root *fs.Inode // the tree's root node, set when it is added

	// byID holds the node of every host file the kernel knows, by
	// identity, each with its fd or file handle (see dataNode).
	idMu sync.Mutex
	byID map[fs.StableAttr]*dataNode

	// The fd budget (fdbudget.go): held fds, at most fdMax of them while
	// the host gives file handles.
	held      atomic.Int64
	fdMax     int
	noHandles atomic.Bool // the host gives no file handles that open
	handlesOK atomic.Bool // a handle was seen to open its file again
	evicting  sync.Mutex

	pool *creds.Pool // runs calls as their callers

	// own remembers how memohfs itself last left the paths it changed
	// (own.go).
	ownNotes
	// negs are the names the kernel was told are missing (negatives.go).
	negs negatives
}

// relOf is the base-relative path of name in dir.
func (t *tree) relOf(dir *fs.Inode, name string) string {
	r := t.rel(dir)
	if r == "." {
		return name
	}
	return r + "/" + name
}

var treeIDs struct {
	sync.Mutex
	next uint64
}

// access says whether a tree can be changed through the mount.
type access bool

const (
	readWrite access = false
	readOnly  access = true
)

func newTree(o Options, pool *creds.Pool, resolve func(ctx context.Context) (string, error), prefix string, a access) *tree {
	treeIDs.Lock()
	treeIDs.next++
	id := treeIDs.next
	treeIDs.Unlock()
	fdMax := o.DataFds
	if fdMax <= 0 {
		fdMax = defaultFdMax
	}
	return &tree{id: id, resolve: resolve, prefix: prefix, readOnly: bool(a), baseFd: -1, mountFd: -1,
		entryTTL: o.DataTTL, attrTTL: o.DataTTL, pool: pool, fdMax: fdMax}
}

// withBase runs fn with the fd of the tree's root node's directory (the
// base, or the prefix below it), opening it first if needed. The fd stays
// valid while fn runs.
//
// A tree with a prefix (skills/ is data/.skills) opens the prefix again
// for every call, beneath the base and without following links: the bot
// may rename or replace .skills at any time, and skills/ must show what
// the name holds now.
func (t *tree) withBase(ctx context.Context, fn func(base int) syscall.Errno) syscall.Errno {
	if t.prefix == "" {
		return t.withBaseDir(ctx, fn)
	}
	return t.withBaseDir(ctx, func(base int) syscall.Errno {
		fd, err := hostfs.OpenBeneath(base, t.prefix, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
		if err != nil {
			return fs.ToErrno(err)
		}
		defer unix.Close(fd)
		return fn(fd)
	})
}

// withBaseDir runs fn with the base dir's fd: the dir t.rel's paths are
// relative to (for a tree with a prefix, the prefix's parent).
func (t *tree) withBaseDir(ctx context.Context, fn func(base int) syscall.Errno) syscall.Errno {
	t.mu.RLock()
	if t.baseFd >= 0 {
		defer t.mu.RUnlock()
		return fn(t.baseFd)
	}
	t.mu.RUnlock()
	t.mu.Lock()
	if t.baseFd < 0 {
		dir, err := t.resolve(ctx)
		if err != nil {
			t.mu.Unlock()
			return errnoOf(err)
		}
		// dir is memohfs's own path (a bot's data dir, a snapshot's copy
		// of it or its rootfs view), not one a bot controls.
		fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			t.mu.Unlock()
			return fs.ToErrno(err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			t.mu.Unlock()
			return fs.ToErrno(err)
		}
		mfd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			unix.Close(fd)
			t.mu.Unlock()
			return fs.ToErrno(err)
		}
		t.baseFd, t.baseDev, t.mountFd = fd, st.Dev, mfd
	}
	t.mu.Unlock()
	return t.withBaseDir(ctx, fn)
}

// reset drops the base fd and every node's fd: the next operation
// resolves the base again (the data dir was replaced by a restore, or a
// snapshot view is let go so it can be removed). A node the kernel still
// has is found again, by the same file, or answers ESTALE.
func (t *tree) reset() {
	t.mu.Lock()
	if t.baseFd >= 0 {
		unix.Close(t.baseFd)
		unix.Close(t.mountFd)
		t.baseFd, t.mountFd = -1, -1
	}
	t.mu.Unlock()
	t.idMu.Lock()
	nodes := t.byID
	t.byID = nil
	t.idMu.Unlock()
	for _, n := range nodes {
		n.dropFd()
	}
}

// nodeFor returns the node for the host file open as fd (O_PATH, taken
// over) with identity id, found from directory node parent: the node the
// tree has for that file already, if any (a hard link, or a name looked
// up again), which keeps one fd per file; else a new node holding fd.
func (t *tree) nodeFor(ctx context.Context, parent *dataNode, fd int, id fs.StableAttr) *fs.Inode {
	defer t.overBudget()
	t.idMu.Lock()
	if old := t.byID[id]; old != nil {
		t.idMu.Unlock()
		old.mu.Lock()
		if old.setFdLocked(fd) {
			old.fh = nil
			fd = -1
		}
		old.mu.Unlock()
		if fd >= 0 {
			unix.Close(fd)
		}
		return old.EmbeddedInode()
	}
	n := &dataNode{t: t, fd: -1, id: id}
	n.setFdLocked(fd) // n is not shared yet
	if t.byID == nil {
		t.byID = map[fs.StableAttr]*dataNode{}
	}
	t.byID[id] = n
	t.idMu.Unlock()
	return parent.NewInode(ctx, n, id)
}

// keep gives node n the fd found for it again (see dataNode.reopen).
func (t *tree) keep(n *dataNode, fd int) {
	defer t.overBudget()
	t.idMu.Lock()
	if other := t.byID[n.id]; other != n {
		if t.byID == nil {
			t.byID = map[fs.StableAttr]*dataNode{}
		}
		t.byID[n.id] = n
		//lint:ignore SA1019 OnForget says when the kernel let go; only Forgotten says whether a lookup took it back since.
		if other != nil && other.Forgotten() {
			// A node made while n was being forgotten and revived, which
			// the kernel never took: its fd goes.
			other.dropFd()
		}
	}
	t.idMu.Unlock()
	n.mu.Lock()
	if n.setFdLocked(fd) {
		fd = -1
	}
	n.mu.Unlock()
	if fd >= 0 {
		unix.Close(fd)
	}
}

// forget closes n's fd once the kernel forgot n, unless a lookup has
// brought it back meanwhile.
func (t *tree) forget(n *dataNode) {
	t.idMu.Lock()
	defer t.idMu.Unlock()
	//lint:ignore SA1019 OnForget says when the kernel let go; only Forgotten says whether a lookup took it back since.
	if !n.Forgotten() {
		return
	}
	if t.byID[n.id] == n {
		delete(t.byID, n.id)
	}
	n.dropFd()
}

// Fds is how many host files the tree holds open for the kernel's nodes.
func (t *tree) Fds() int64 { return t.held.Load() }

// rel is the path of node n relative to the base dir ("." for the base).
func (t *tree) rel(n *fs.Inode) string {
	p := n.Path(t.root)
	if t.prefix != "" {
		p = path.Join(t.prefix, p)
	}
	if p == "" {
		return "."
	}
	return p
}

// noCache reports whether the kernel may not cache rel.
func (t *tree) noCache(rel string) bool { return t.uncached != nil && t.uncached(rel) }

// stable gives the identity of a host file in this tree: its inode number
// (mixed with the device when it differs from the base's, as in go-fuse's
// loopback) and a generation from the tree and the file's birth time.
func (t *tree) stable(x *unix.Statx_t) fs.StableAttr {
	dev := unix.Mkdev(x.Dev_major, x.Dev_minor)
	swapped := (dev << 32) | (dev >> 32)
	baseSwapped := (t.baseDev << 32) | (t.baseDev >> 32)
	h := fnv.New64a()
	h.Write([]byte(strconv.FormatUint(t.id, 10) + "/" +
		strconv.FormatInt(x.Btime.Sec, 10) + "." + strconv.FormatUint(uint64(x.Btime.Nsec), 10)))
	return fs.StableAttr{Mode: uint32(x.Mode) & unix.S_IFMT, Ino: (swapped ^ baseSwapped) ^ x.Ino, Gen: h.Sum64() | 1}
}

// attrFromStatx fills a FUSE attr from Statx.
func attrFromStatx(a *fuse.Attr, x *unix.Statx_t) {
	a.Ino = x.Ino
	a.Size = x.Size
	a.Blocks = x.Blocks
	a.Atime, a.Atimensec = uint64(x.Atime.Sec), x.Atime.Nsec
	a.Mtime, a.Mtimensec = uint64(x.Mtime.Sec), x.Mtime.Nsec
	a.Ctime, a.Ctimensec = uint64(x.Ctime.Sec), x.Ctime.Nsec
	a.Mode = uint32(x.Mode)
	a.Nlink = x.Nlink
	a.Uid, a.Gid = x.Uid, x.Gid
	a.Rdev = uint32(unix.Mkdev(x.Rdev_major, x.Rdev_minor))
	a.Blksize = x.Blksize
}
