package fsnodes

import (
	"context"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/memohfs/memohfs/internal/hostfs"

	"golang.org/x/sys/unix"
)

// The fd budget: how many O_PATH fds a tree holds for the kernel's nodes.
//
// The kernel keeps a node for every name it has looked up until memory
// pressure or a FORGET drops it: `find data/` over a bot's 100,000 files
// leaves 100,000 nodes. Each holds its host file as an fd (dataNode), so
// a tree holds at most fdMax of them, as virtiofsd's --inode-file-handles
// does: past fdMax, the nodes used least lately give their fd up for a
// file handle (name_to_handle_at), and take one again from it
// (open_by_handle_at) when next used. A file handle names the inode and
// its generation, not a path: it finds the same file wherever it is now,
// or ESTALE once it is gone, never another file at the same name.
//
//	# DataFds 1024; stat every one of a bot's 100,000 files (TestFdBudget):
//	$ find /memoh/b/data -type f | xargs stat >/dev/null
//	$ ls -l /proc/$(pidof memohfs)/fd | grep -c /bots/b/
//	1027
//
// Nodes keep their fd when the host cannot give a handle (a filesystem
// without export support, such as an overlay without nfs_export): the
// budget is then RLIMIT_NOFILE, raised at mount to fs.nr_open. A node
// whose file has no links left (deleted, still open) keeps its fd too: a
// handle of a deleted file may no longer open.

// defaultFdMax is fdMax when Options.DataFds is zero.
const defaultFdMax = 8192

// All trees of the process share its fd limit: together they hold at
// most fdsMax fds (half of RLIMIT_NOFILE, set at mount; the rest is for
// open files, the FUSE device, sockets and watchers). A tree that adds
// an fd while they hold more gives up its own least used ones.
var fdsHeld, fdsMax atomic.Int64

// setProcessFdMax sets fdsMax from the process's fd limit.
func setProcessFdMax(limit uint64) {
	fdsMax.Store(int64(limit / 2))
}

// overProcess reports how many fds the trees hold past the process's
// share (0 if none, or no limit is set).
func overProcess() int64 {
	m := fdsMax.Load()
	if m <= 0 {
		return 0
	}
	return max(0, fdsHeld.Load()-m*7/8)
}

// noteUse marks n as used lately: the next eviction pass passes it over
// once (the clock algorithm's second chance).
func (n *dataNode) noteUse() { n.used.Store(true) }

// setFdLocked gives n (n.mu held for writing) the fd if it has none, and
// reports whether it took it.
func (n *dataNode) setFdLocked(fd int) bool {
	if n.fd >= 0 {
		return false
	}
	n.fd = fd
	n.used.Store(true)
	n.t.held.Add(1)
	fdsHeld.Add(1)
	return true
}

// closeFdLocked closes n's fd (n.mu held for writing).
func (n *dataNode) closeFdLocked() {
	if n.fd >= 0 {
		unix.Close(n.fd)
		n.fd = -1
		n.t.held.Add(-1)
		fdsHeld.Add(-1)
	}
}

// overBudget evicts fds when the tree holds more than its budget, or the
// process's trees more than their share. One caller at a time does it;
// the others go on.
func (t *tree) overBudget() {
	over := t.held.Load() > int64(t.fdMax) || fdsMax.Load() > 0 && fdsHeld.Load() > fdsMax.Load()
	if !over || t.noHandles.Load() || !t.evicting.TryLock() {
		return
	}
	defer t.evicting.Unlock()
	// Down to 7/8 of the budget, so a pass runs once per fdMax/8 new
	// fds, not for every lookup past the budget.
	want := max(t.held.Load()-int64(t.fdMax)*7/8, min(t.held.Load(), overProcess()))
	for round := 0; round < 3 && want > 0; round++ {
		want -= int64(t.evictPass(int(want)))
	}
}

// evictPass gives up to want nodes' fds for handles: nodes not used since
// the last pass, in the map's (random) order; used ones lose their mark.
func (t *tree) evictPass(want int) int {
	var cand []*dataNode
	t.idMu.Lock()
	for _, n := range t.byID {
		if len(cand) >= want {
			break
		}
		if n.used.Swap(false) {
			continue
		}
		cand = append(cand, n)
	}
	t.idMu.Unlock()
	done := 0
	for _, n := range cand {
		if t.evict(n) {
			done++
		} else if t.noHandles.Load() {
			break
		}
	}
	return done
}

// evict swaps n's fd for a file handle, unless n is in use right now or
// its file cannot be named by one.
func (t *tree) evict(n *dataNode) bool {
	if !n.mu.TryLock() {
		return false // an operation holds the fd
	}
	defer n.mu.Unlock()
	if n.fd < 0 || n.used.Load() {
		return false
	}
	var x unix.Statx_t
	if hostfs.Statx(n.fd, "", &x) != nil || x.Nlink == 0 {
		return false
	}
	fh, _, err := unix.NameToHandleAt(n.fd, "", unix.AT_EMPTY_PATH)
	if err != nil {
		if err == unix.EOPNOTSUPP || err == unix.ENOSYS {
			t.noHandles.Store(true)
		}
		return false
	}
	if ok, sure := t.handlesWork(fh, n.id); !ok {
		if sure {
			t.noHandles.Store(true)
		}
		return false
	}
	n.fh = &fh
	n.closeFdLocked()
	return true
}

// handlesWork checks once per tree, on its first eviction, that a handle
// the host gave opens the same file again (an overlay can name files by
// handles it cannot open). sure is false when it could not tell (the
// tree was reset meanwhile).
func (t *tree) handlesWork(fh unix.FileHandle, id fs.StableAttr) (ok, sure bool) {
	if t.handlesOK.Load() {
		return true, true
	}
	t.mu.RLock()
	if t.mountFd < 0 {
		t.mu.RUnlock()
		return false, false
	}
	fd, err := unix.OpenByHandleAt(t.mountFd, fh, unix.O_PATH|unix.O_CLOEXEC)
	t.mu.RUnlock()
	if err != nil {
		return false, true
	}
	defer unix.Close(fd)
	var x unix.Statx_t
	if hostfs.Statx(fd, "", &x) != nil || t.stable(&x) != id {
		return false, true
	}
	t.handlesOK.Store(true)
	return true, true
}

// reopenHandle takes an fd for an evicted node again from its file
// handle: the same inode, or ESTALE if it is gone.
func (n *dataNode) reopenHandle(ctx context.Context, fh *unix.FileHandle) syscall.Errno {
	fd := -1
	e := n.t.withBaseDir(ctx, func(int) syscall.Errno {
		// The base dir is on the tree's filesystem (open_by_handle_at's
		// mount fd); the handle came from name_to_handle_at of this
		// node's own fd.
		var err error
		if fd, err = unix.OpenByHandleAt(n.t.mountFd, *fh, unix.O_PATH|unix.O_CLOEXEC); err != nil {
			return syscall.ESTALE
		}
		return 0
	})
	if e != 0 {
		return e
	}
	// n.mu is taken outside withBaseDir (see dataNode.reopen).
	var x unix.Statx_t
	if hostfs.Statx(fd, "", &x) != nil || n.t.stable(&x) != n.id {
		unix.Close(fd)
		return syscall.ESTALE
	}
	n.mu.Lock()
	if !n.setFdLocked(fd) {
		unix.Close(fd)
	}
	n.mu.Unlock()
	n.t.overBudget()
	return 0
}
