// Package treesync copies a directory tree it does not trust into one it
// owns, and brings that copy up to date in later passes at a cost that
// grows with what changed. It is how a live snapshot keeps its pause short:
// one pass while the bot runs, a last pass (only what changed since) while
// it is frozen.
//
// The source is walked with directory fds and single names, never path
// strings: every access is relative to an open directory with no-follow
// semantics, so a symlink planted anywhere in the tree, or swapped in
// during the copy, is copied as a symlink and never followed, and a tree
// deeper than PATH_MAX copies like any other. Only regular files and
// directories are ever opened for I/O, and only after the kernel confirmed
// their type on the very inode being opened (an O_PATH fd for files,
// O_DIRECTORY for directories): a device node, fifo or socket, even one
// swapped in at a name between two calls, is recreated with mknod or
// skipped, never opened. A pass holds at most three directory fds per
// level of depth (source, copy, previous copy) and a few more briefly.
//
// The copy never shares an inode with live data; unchanged files may be
// hard links to a previous copy (which is never written again).
package treesync

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"time"

	"golang.org/x/sys/unix"
)

// Sig identifies the state of a source file when it was copied. ctime is
// in it because no user can set it: a file whose signature is unchanged
// has not been written, chmod-ed, chown-ed or renamed over since.
type Sig struct {
	Ino, Size      uint64
	Mtime, Ctime   int64
	Mode, Uid, Gid uint32
}

func sigOf(st *unix.Stat_t) Sig {
	return Sig{
		Ino: st.Ino, Size: uint64(st.Size),
		Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano(),
		Mode: st.Mode, Uid: st.Uid, Gid: st.Gid,
	}
}

// racySlack covers the kernel's coarse file timestamps (one tick, at most
// 10 ms) with room to spare: a file whose ctime is this close to the start
// of the pass that copied it may have changed again within the same tick,
// so its signature proves nothing and it is copied again next time.
const racySlack = 25 * time.Millisecond

// Options says what to copy besides directories, regular files and
// symlinks.
type Options struct {
	// PrevRoot is an earlier copy of the same source and Prev its
	// manifest: files unchanged since are hard-linked from there instead
	// of copied (first pass only).
	PrevRoot string
	Prev     Manifest
	// Special recreates device nodes, fifos and sockets with mknod (an
	// overlay upper dir's whiteouts are 0/0 character devices); they are
	// never opened either way. Without it they are skipped: they are not
	// data.
	Special bool
	// Xattr says which extended attributes to copy; none when nil.
	Xattr func(name string) bool
}

// Stats says what one pass did.
type Stats struct {
	Dirs, Files, Linked, Copied, Symlinks, Special, Skipped, Removed, Unchanged int
	// Raced counts entries found replaced or gone between their stat and
	// their open (also counted in Skipped): nothing was opened, and the
	// next pass sees what they became.
	Raced int
	Bytes int64 // bytes copied (not linked)
}

// node is what the copy holds for one source entry: the source's
// signature when it was copied, and for directories their entries.
type node struct {
	sig  Sig
	racy bool
	kids map[string]*node
}

func (n *node) kind() uint32 { return n.sig.Mode & unix.S_IFMT }

// Tree is a copy of src at dst kept up to date by Pass.
type Tree struct {
	src, dst string
	o        Options
	root     *node
	passes   int
	start    time.Time // of the running pass
	// inodes maps a source inode with several names to the path (relative
	// to dst) of its first copy, to link its other names to.
	inodes  map[uint64]string
	stats   Stats
	dstRoot int // the copy's root during a pass
}

// level is one directory being synced: the source's, the copy's and the
// previous copy's (-1 when there is none), all open.
type level struct {
	src, dst, prev int
}

// New describes a copy of src at dst; nothing happens until Pass. dst is
// created by the first pass (it may also exist, empty). src, dst and
// PrevRoot are trusted paths (the daemon's own); src's last component is
// not followed, and nothing under it is.
func New(src, dst string, o Options) *Tree {
	return &Tree{src: src, dst: dst, o: o, inodes: map[uint64]string{}}
}

// Pass brings the copy in line with the source: the first pass copies
// everything; later ones copy what changed (or could have: see racySlack),
// remove what is gone and leave the rest alone.
func (t *Tree) Pass() (Stats, error) {
	t.stats = Stats{}
	t.start = time.Now()
	src, err := unix.Open(t.src, dirFlags, 0)
	if err != nil {
		return t.stats, fmt.Errorf("open %s: %w", t.src, err)
	}
	defer unix.Close(src)
	var st unix.Stat_t
	if err := unix.Fstat(src, &st); err != nil {
		return t.stats, err
	}
	if t.root == nil {
		if err := os.Mkdir(t.dst, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return t.stats, err
		}
		t.root = &node{kids: map[string]*node{}}
	}
	dst, err := unix.Open(t.dst, dirFlags, 0)
	if err != nil {
		return t.stats, fmt.Errorf("open %s: %w", t.dst, err)
	}
	defer unix.Close(dst)
	t.dstRoot = dst
	prev := -1
	if t.passes == 0 && t.o.PrevRoot != "" {
		// A previous copy that cannot be opened only costs the links.
		if fd, err := unix.Open(t.o.PrevRoot, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err == nil {
			prev = fd
			defer unix.Close(fd)
		}
	}
	changed, err := t.dir(level{src, dst, prev}, "", t.root)
	if err != nil {
		return t.stats, err
	}
	if changed || !t.clean(t.root, &st) {
		if err := t.meta(src, dst, &st); err != nil {
			return t.stats, err
		}
		t.record(t.root, &st)
	}
	t.passes++
	return t.stats, nil
}

// Manifest lists the regular files of the copy with trustworthy
// signatures, for the next copy's PrevRoot/Prev.
func (t *Tree) Manifest() Manifest {
	m := Manifest{}
	var walk func(rel string, n *node)
	walk = func(rel string, n *node) {
		for name, k := range n.kids {
			p := join(rel, name)
			switch {
			case k.kind() == unix.S_IFDIR:
				walk(p, k)
			case k.kind() == unix.S_IFREG && !k.racy:
				m[p] = k.sig
			}
		}
	}
	if t.root != nil {
		walk("", t.root)
	}
	return m
}

func join(rel, name string) string {
	if rel == "" {
		return name
	}
	return rel + "/" + name
}

// clean: the copy of this entry is known to match st.
func (t *Tree) clean(n *node, st *unix.Stat_t) bool {
	return n != nil && !n.racy && n.sig == sigOf(st)
}

func (t *Tree) record(n *node, st *unix.Stat_t) {
	n.sig = sigOf(st)
	n.racy = st.Ctim.Nano()+int64(racySlack) >= t.start.UnixNano()
}

// dir syncs the entries of the open source directory l.src into l.dst; it
// reports whether it changed anything in l.dst itself.
func (t *Tree) dir(l level, rel string, n *node) (changed bool, err error) {
	names, err := readNames(l.src)
	if err != nil {
		return false, fmt.Errorf("read dir %q: %w", rel, err)
	}
	t.stats.Dirs++
	seen := make(map[string]bool, len(names))
	for _, name := range names {
		seen[name] = true
		c, err := t.entry(l, rel, name, n)
		if err != nil {
			return changed, err
		}
		changed = changed || c
	}
	for name := range n.kids {
		if !seen[name] {
			if err := removeAllAt(l.dst, name); err != nil {
				return changed, err
			}
			delete(n.kids, name)
			t.stats.Removed++
			changed = true
		}
	}
	return changed, nil
}

// entry syncs one source entry; it reports whether l.dst changed. The
// lstat only decides what to try: it opens nothing, and whatever is opened
// afterwards is checked again on the opened inode.
func (t *Tree) entry(l level, rel, name string, parent *node) (bool, error) {
	childRel := join(rel, name)
	var st unix.Stat_t
	if err := unix.Fstatat(l.src, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return t.drop(l.dst, name, parent) // gone meanwhile
		}
		return false, fmt.Errorf("stat %q: %w", childRel, err)
	}
	kind := st.Mode & unix.S_IFMT
	old := parent.kids[name]
	changed := false
	if old != nil && old.kind() != kind {
		// Replaced by something of another type: start that entry over.
		if _, err := t.drop(l.dst, name, parent); err != nil {
			return false, err
		}
		old, changed = nil, true
	}
	switch kind {
	case unix.S_IFDIR:
		return t.subdir(l, childRel, name, &st, old, parent, changed)
	case unix.S_IFREG:
		return t.file(l, childRel, name, &st, old, parent, changed)
	case unix.S_IFLNK:
		return t.symlink(l, childRel, name, &st, old, parent, changed)
	default:
		return t.special(l, childRel, name, &st, old, parent, changed)
	}
}

func (t *Tree) subdir(l level, rel, name string, st *unix.Stat_t, old, parent *node, changed bool) (bool, error) {
	src, err := openDir(l.src, name)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			// Replaced meanwhile; the next pass sees what it became.
			t.stats.Raced++
			t.stats.Skipped++
			return changed, nil
		}
		return changed, fmt.Errorf("open dir %q: %w", rel, err)
	}
	defer unix.Close(src)
	if err := unix.Fstat(src, st); err != nil {
		return changed, err
	}
	n := old
	if n == nil {
		if err := unix.Mkdirat(l.dst, name, 0o700); err != nil {
			return changed, fmt.Errorf("mkdir %q: %w", rel, err)
		}
		n = &node{kids: map[string]*node{}}
		parent.kids[name] = n
		changed = true
	}
	dst, err := openDir(l.dst, name)
	if err != nil {
		return changed, fmt.Errorf("open copy of %q: %w", rel, err)
	}
	defer unix.Close(dst)
	prev := -1
	if l.prev >= 0 {
		if fd, err := unix.Openat(l.prev, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err == nil {
			prev = fd
			defer unix.Close(fd)
		}
	}
	inner, err := t.dir(level{src, dst, prev}, rel, n)
	if err != nil {
		return changed, err
	}
	if old == nil || inner || !t.clean(n, st) {
		if err := t.meta(src, dst, st); err != nil {
			return changed, err
		}
		t.record(n, st)
	}
	return changed, nil
}

func (t *Tree) file(l level, rel, name string, st *unix.Stat_t, old, parent *node, changed bool) (bool, error) {
	t.stats.Files++
	if st.Nlink > 1 {
		defer func() { t.inodes[st.Ino] = rel }()
	}
	if t.clean(old, st) {
		t.stats.Unchanged++
		return changed, nil
	}
	if old != nil {
		// Never write into an existing copy: it may be a hard link
		// into a previous snapshot. Replace it.
		if err := unix.Unlinkat(l.dst, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return changed, err
		}
		delete(parent.kids, name)
	}
	changed = true
	n := &node{}
	if t.link(l, st, rel, name) {
		t.record(n, st)
		parent.kids[name] = n
		t.stats.Linked++
		return changed, nil
	}
	got, bytes, err := t.copyFile(l, name, st)
	if err != nil {
		if errors.Is(err, errChanged) {
			t.stats.Raced++
			t.stats.Skipped++ // the next pass sees what it became
			return changed, nil
		}
		return changed, fmt.Errorf("copy %q: %w", rel, err)
	}
	t.record(n, &got)
	parent.kids[name] = n
	t.stats.Copied++
	t.stats.Bytes += bytes
	return changed, nil
}

func (t *Tree) symlink(l level, rel, name string, st *unix.Stat_t, old, parent *node, changed bool) (bool, error) {
	if t.clean(old, st) {
		return changed, nil
	}
	target, err := readlinkat(l.src, name)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINVAL) {
			t.stats.Raced++
			t.stats.Skipped++
			return changed, nil
		}
		return changed, fmt.Errorf("readlink %q: %w", rel, err)
	}
	if old != nil {
		if err := unix.Unlinkat(l.dst, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return changed, err
		}
	}
	if err := unix.Symlinkat(target, l.dst, name); err != nil {
		return true, fmt.Errorf("symlink %q: %w", rel, err)
	}
	if err := metaAt(l.dst, name, st); err != nil {
		return true, err
	}
	n := &node{}
	t.record(n, st)
	parent.kids[name] = n
	t.stats.Symlinks++
	return true, nil
}

// special recreates a device node, fifo or socket from its lstat alone:
// it is never opened, so no driver sees an open and no fifo blocks us.
func (t *Tree) special(l level, rel, name string, st *unix.Stat_t, old, parent *node, changed bool) (bool, error) {
	if !t.o.Special {
		t.stats.Skipped++
		return changed, nil
	}
	if t.clean(old, st) {
		return changed, nil
	}
	if old != nil {
		if err := unix.Unlinkat(l.dst, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return changed, err
		}
	}
	if err := unix.Mknodat(l.dst, name, st.Mode&^07777|0o600, int(st.Rdev)); err != nil {
		return true, fmt.Errorf("mknod %q: %w", rel, err)
	}
	if err := metaAt(l.dst, name, st); err != nil {
		return true, err
	}
	n := &node{}
	t.record(n, st)
	parent.kids[name] = n
	t.stats.Special++
	return true, nil
}

// drop removes the copy of an entry that is gone from the source.
func (t *Tree) drop(dstdir int, name string, parent *node) (bool, error) {
	if _, ok := parent.kids[name]; !ok {
		return false, nil
	}
	if err := removeAllAt(dstdir, name); err != nil {
		return false, err
	}
	delete(parent.kids, name)
	t.stats.Removed++
	return true, nil
}

// link hard-links name in l.dst to an existing copy of the same content: a
// previous copy's (first pass, unchanged signature) or, for a source file
// with several names, the copy of its first name in this copy.
func (t *Tree) link(l level, st *unix.Stat_t, rel, name string) bool {
	if st.Nlink > 1 {
		if first, ok := t.inodes[st.Ino]; ok {
			dir, base := path.Split(first)
			err := withDirBeneath(t.dstRoot, path.Clean("/" + dir)[1:], func(fd int) error {
				// Only if that copy is still of this inode's current state.
				var fst unix.Stat_t
				if err := unix.Fstatat(fd, base, &fst, unix.AT_SYMLINK_NOFOLLOW); err != nil {
					return err
				}
				if fst.Mode&unix.S_IFMT != unix.S_IFREG || fst.Size != st.Size || fst.Mtim != st.Mtim {
					return errChanged
				}
				return unix.Linkat(fd, base, l.dst, name, 0)
			})
			if err == nil {
				return true
			}
		}
	}
	if l.prev >= 0 {
		if old, ok := t.o.Prev[rel]; ok && old == sigOf(st) {
			return unix.Linkat(l.prev, name, l.dst, name, 0) == nil
		}
	}
	return false
}

var errChanged = errors.New("replaced while copying")

// copyFile copies the regular file name in l.src to l.dst, with the
// source's owner, xattrs, mode and times; it returns the source's state as
// of before the copy. It opens the source only if it still is the regular
// file st describes (openRegular); else errChanged.
func (t *Tree) copyFile(l level, name string, st *unix.Stat_t) (unix.Stat_t, int64, error) {
	fd, now, err := openRegular(l.src, name, st)
	if err != nil {
		return now, 0, err
	}
	src := os.NewFile(uintptr(fd), name)
	defer src.Close()
	ofd, err := unix.Openat(l.dst, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return now, 0, err
	}
	out := os.NewFile(uintptr(ofd), name)
	n, err := io.Copy(out, src) // copy_file_range where the kernel can
	if err == nil {
		err = t.meta(fd, ofd, &now)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return now, n, err
}
