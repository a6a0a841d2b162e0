package fsnodes

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/memohfs/memohfs/internal/hostfs"
	"golang.org/x/sys/unix"
)

// invalidate brings the kernel's cache of a path in t (changed behind
// the mount) up to date, touching only what the kernel knows:
//
//   - the host entry is as memohfs itself left it: nothing (our own change);
//   - gone on the host, or replaced by another file: the entry is dropped.
//     If the file the kernel knows there has no name left, it is deleted
//     (NOTIFY_DELETE, which leaves a process whose working dir it was in a
//     deleted dir, as on a disk); if it was moved elsewhere it lives on
//     (NOTIFY_INVAL_ENTRY: a process in it, or holding it open, goes on
//     using it, and it shows up under its new name on the next lookup);
//   - the same file, changed: its attributes and pages are dropped, the
//     entry stays (invalidating the entry of a directory someone has as
//     working dir would cut them off: getcwd fails), unless the kernel is
//     only now making its inode from a lookup answered before the change:
//     then the entry that lookup makes is dropped;
//   - new, never seen: a negative entry is dropped;
//
// and a directory whose entries changed has its cached listing dropped.
func (t *tree) invalidate(ch change) {
	if ch.Overflow {
		invalidateAll(t)
		return
	}
	rel := ch.Rel
	if t.root == nil || rel == "" || rel == "." {
		return
	}
	parts := strings.Split(filepath.ToSlash(rel), "/")
	dir := t.root
	for _, p := range parts[:len(parts)-1] {
		dir = dir.GetChild(p)
		if dir == nil {
			return // the kernel knows nothing below here
		}
	}
	name := parts[len(parts)-1]
	full := t.relOf(dir, name)
	// A change memohfs is making there right now is judged when it is done.
	t.settled(full, time.Second)
	child := dir.GetChild(name)
	var x unix.Statx_t
	exists := t.withBaseDir(ctxBackground(), func(base int) syscall.Errno {
		fd, err := hostfs.OpenBeneath(base, t.rel(dir), unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			return gofs.ToErrno(err)
		}
		defer unix.Close(fd)
		return gofs.ToErrno(hostfs.Statx(fd, name, &x))
	}) == 0
	if exists && t.isOwn(full, &x) || !exists && t.isOwn(full, nil) {
		return
	}
	switch {
	case child == nil:
		dir.NotifyEntry(name)
		t.negs.drop(dir, name)
	case !exists || child.StableAttr() != t.stable(&x):
		if linked(child) {
			dir.NotifyEntry(name)
		} else {
			dir.NotifyDelete(name, child)
		}
	default:
		if child.NotifyContent(0, 0) == syscall.ENOENT {
			// The kernel has no inode for the node yet: a lookup (or
			// readdirplus) that answered it may still be on its way in,
			// with the attributes from before this change, and
			// NOTIFY_INVAL_INODE was dropped. NOTIFY_INVAL_ENTRY takes
			// the parent's lock, which such a lookup holds until its
			// entry is made: it waits for it and drops that entry.
			dir.NotifyEntry(name)
		}
	}
	if ch.Op.has(opCreate | opRemove | opRename) {
		dir.NotifyContent(0, 0) // its cached listing
	}
}

// linked reports whether the host file of a node still has a name
// (nlink > 0): moved, not removed.
func linked(ch *gofs.Inode) bool {
	n, ok := ch.Operations().(*dataNode)
	if !ok {
		return false
	}
	var x unix.Statx_t
	return n.hostFd(ctxBackground(), func(fd int) syscall.Errno {
		return gofs.ToErrno(hostfs.Statx(fd, "", &x))
	}) == 0 && x.Nlink > 0
}

// invalidateAll forgets every entry the kernel knows under t's root,
// the names it holds as missing included.
func invalidateAll(t *tree) {
	if t.root == nil {
		return
	}
	var walk func(n *gofs.Inode)
	walk = func(n *gofs.Inode) {
		for name, ch := range n.Children() {
			walk(ch)
			ch.NotifyContent(0, 0)
			n.NotifyEntry(name)
		}
	}
	walk(t.root)
	t.root.NotifyContent(0, 0)
	for _, k := range t.negs.take() {
		k.dir.NotifyEntry(k.name)
	}
	t.forgetOwn()
}

// cutPrefixDir reports whether rel is at or below dir, and the rest.
func cutPrefixDir(rel, dir string) (string, bool) {
	if rel == dir {
		return ".", true
	}
	rest, ok := strings.CutPrefix(rel, dir+string(os.PathSeparator))
	return rest, ok
}
