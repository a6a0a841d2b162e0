// Package treesync copies a directory tree it does not trust into one it
// owns, and brings that copy up to date in later passes at a cost that
// grows with what changed. It is how a live snapshot keeps its pause short:
// one pass while the bot runs, a last pass (only what changed since) while
// it is frozen.
//
// Every source access is relative to an open directory with no-follow
// semantics: a symlink planted anywhere in the tree, or swapped in during
// the copy, is copied as a symlink and never followed. The copy never
// shares an inode with live data; unchanged files may be hard links to a
// previous copy (which is never written again).
package treesync

import (
	"bytes"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
	"unsafe"

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

// Manifest maps each regular file of a finished copy (path relative to the
// root) to the signature its source had. Files whose signature was racy
// are left out, so the next copy does not trust them.
type Manifest map[string]Sig

// Save writes the manifest atomically.
func (m Manifest) Save(path string) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".manifest-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := gob.NewEncoder(f).Encode(m); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// LoadManifest reads a manifest written by Save.
func LoadManifest(path string) (Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := Manifest{}
	return m, gob.NewDecoder(f).Decode(&m)
}

// Options says what to copy besides directories, regular files and
// symlinks.
type Options struct {
	// PrevRoot is an earlier copy of the same source and Prev its
	// manifest: files unchanged since are hard-linked from there instead
	// of copied (first pass only).
	PrevRoot string
	Prev     Manifest
	// Special copies device nodes, fifos and sockets (an overlay upper
	// dir's whiteouts are 0/0 character devices). Without it they are
	// skipped: they are not data.
	Special bool
	// Xattr says which extended attributes to copy; none when nil.
	Xattr func(name string) bool
}

// Stats says what one pass did.
type Stats struct {
	Dirs, Files, Linked, Copied, Symlinks, Special, Skipped, Removed, Unchanged int
	Bytes                                                                       int64 // bytes copied (not linked)
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
	inodes   map[uint64]string
	stats    Stats
}

// New describes a copy of src at dst; nothing happens until Pass. dst is
// created by the first pass (it may also exist, empty).
func New(src, dst string, o Options) *Tree {
	return &Tree{src: src, dst: dst, o: o, inodes: map[uint64]string{}}
}

// Pass brings the copy in line with the source: the first pass copies
// everything; later ones copy what changed (or could have: see racySlack),
// remove what is gone and leave the rest alone.
func (t *Tree) Pass() (Stats, error) {
	t.stats = Stats{}
	t.start = time.Now()
	fd, err := unix.Open(t.src, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return t.stats, fmt.Errorf("open %s: %w", t.src, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return t.stats, err
	}
	if t.root == nil {
		if err := os.Mkdir(t.dst, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return t.stats, err
		}
		t.root = &node{kids: map[string]*node{}}
	}
	changed, err := t.dir(fd, t.dst, "", t.root)
	if err != nil {
		return t.stats, err
	}
	if changed || !t.clean(t.root, &st) {
		if err := t.meta(fd, t.dst, &st, unix.S_IFDIR); err != nil {
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
			p := filepath.Join(rel, name)
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

// clean: the copy of this entry is known to match st.
func (t *Tree) clean(n *node, st *unix.Stat_t) bool {
	return n != nil && !n.racy && n.sig == sigOf(st)
}

func (t *Tree) record(n *node, st *unix.Stat_t) {
	n.sig = sigOf(st)
	n.racy = st.Ctim.Nano()+int64(racySlack) >= t.start.UnixNano()
}

// dir syncs the entries of the open source directory dirfd into dstDir;
// it reports whether it changed anything in dstDir itself.
func (t *Tree) dir(dirfd int, dstDir, rel string, n *node) (changed bool, err error) {
	names, err := readNames(dirfd)
	if err != nil {
		return false, fmt.Errorf("read dir %q: %w", rel, err)
	}
	t.stats.Dirs++
	seen := make(map[string]bool, len(names))
	for _, name := range names {
		seen[name] = true
		c, err := t.entry(dirfd, dstDir, rel, name, n)
		if err != nil {
			return changed, err
		}
		changed = changed || c
	}
	for name := range n.kids {
		if !seen[name] {
			if err := os.RemoveAll(filepath.Join(dstDir, name)); err != nil {
				return changed, err
			}
			delete(n.kids, name)
			t.stats.Removed++
			changed = true
		}
	}
	return changed, nil
}

// entry syncs one source entry; it reports whether dstDir changed.
func (t *Tree) entry(dirfd int, dstDir, rel, name string, parent *node) (bool, error) {
	childRel := filepath.Join(rel, name)
	dstPath := filepath.Join(dstDir, name)
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return t.drop(dstDir, name, parent) // gone meanwhile
		}
		return false, fmt.Errorf("stat %q: %w", childRel, err)
	}
	kind := st.Mode & unix.S_IFMT
	old := parent.kids[name]
	changed := false
	if old != nil && old.kind() != kind {
		// Replaced by something of another type: start that entry over.
		if _, err := t.drop(dstDir, name, parent); err != nil {
			return false, err
		}
		old, changed = nil, true
	}
	switch kind {
	case unix.S_IFDIR:
		cfd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
				return changed, nil // replaced meanwhile; the next pass sees what it became
			}
			return changed, fmt.Errorf("open dir %q: %w", childRel, err)
		}
		defer unix.Close(cfd)
		if err := unix.Fstat(cfd, &st); err != nil {
			return changed, err
		}
		n := old
		if n == nil {
			if err := os.Mkdir(dstPath, 0o700); err != nil {
				return changed, err
			}
			n = &node{kids: map[string]*node{}}
			parent.kids[name] = n
			changed = true
		}
		inner, err := t.dir(cfd, dstPath, childRel, n)
		if err != nil {
			return changed, err
		}
		if old == nil || inner || !t.clean(n, &st) {
			if err := t.meta(cfd, dstPath, &st, unix.S_IFDIR); err != nil {
				return changed, err
			}
			t.record(n, &st)
		}
		return changed, nil
	case unix.S_IFREG:
		t.stats.Files++
		if st.Nlink > 1 {
			defer func() { t.inodes[st.Ino] = dstPath }()
		}
		if t.clean(old, &st) {
			t.stats.Unchanged++
			return changed, nil
		}
		if old != nil {
			// Never write into an existing copy: it may be a hard link
			// into a previous snapshot. Replace it.
			if err := unix.Unlink(dstPath); err != nil && !errors.Is(err, unix.ENOENT) {
				return changed, err
			}
			delete(parent.kids, name)
		}
		changed = true
		n := &node{}
		if t.link(&st, childRel, dstPath) {
			t.record(n, &st)
			parent.kids[name] = n
			t.stats.Linked++
			return changed, nil
		}
		got, bytes, err := t.copyFile(dirfd, name, dstPath, &st)
		if err != nil {
			if errors.Is(err, errChanged) {
				t.stats.Skipped++ // the next pass sees what it became
				return changed, nil
			}
			return changed, fmt.Errorf("copy %q: %w", childRel, err)
		}
		t.record(n, &got)
		parent.kids[name] = n
		t.stats.Copied++
		t.stats.Bytes += bytes
		return changed, nil
	case unix.S_IFLNK:
		if t.clean(old, &st) {
			return changed, nil
		}
		target, err := readlinkat(dirfd, name)
		if err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINVAL) {
				return changed, nil
			}
			return changed, fmt.Errorf("readlink %q: %w", childRel, err)
		}
		if old != nil {
			if err := unix.Unlink(dstPath); err != nil && !errors.Is(err, unix.ENOENT) {
				return changed, err
			}
		}
		if err := os.Symlink(target, dstPath); err != nil {
			return true, err
		}
		if err := setOwnerTimes(dstPath, &st); err != nil {
			return true, err
		}
		n := &node{}
		t.record(n, &st)
		parent.kids[name] = n
		t.stats.Symlinks++
		return true, nil
	default:
		if !t.o.Special {
			t.stats.Skipped++
			return changed, nil
		}
		if t.clean(old, &st) {
			return changed, nil
		}
		if old != nil {
			if err := unix.Unlink(dstPath); err != nil && !errors.Is(err, unix.ENOENT) {
				return changed, err
			}
		}
		if err := unix.Mknod(dstPath, st.Mode&^07777|0o600, int(st.Rdev)); err != nil {
			return true, fmt.Errorf("mknod %q: %w", childRel, err)
		}
		if err := unix.Lchown(dstPath, int(st.Uid), int(st.Gid)); err != nil {
			return true, err
		}
		if err := unix.Chmod(dstPath, st.Mode&07777); err != nil {
			return true, err
		}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, dstPath, []unix.Timespec{st.Atim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return true, err
		}
		n := &node{}
		t.record(n, &st)
		parent.kids[name] = n
		t.stats.Special++
		return true, nil
	}
}

// drop removes the copy of an entry that is gone from the source.
func (t *Tree) drop(dstDir, name string, parent *node) (bool, error) {
	if _, ok := parent.kids[name]; !ok {
		return false, nil
	}
	if err := os.RemoveAll(filepath.Join(dstDir, name)); err != nil {
		return false, err
	}
	delete(parent.kids, name)
	t.stats.Removed++
	return true, nil
}

// link hard-links dstPath to an existing copy of the same content: a
// previous copy's (first pass, unchanged signature) or, for a source file
// with several names, the copy of its first name in this copy.
func (t *Tree) link(st *unix.Stat_t, rel, dstPath string) bool {
	if st.Nlink > 1 {
		if first, ok := t.inodes[st.Ino]; ok {
			var fst unix.Stat_t
			// Only if that copy is still of this inode's current state.
			if unix.Lstat(first, &fst) == nil && fst.Size == st.Size && fst.Mtim == st.Mtim {
				if os.Link(first, dstPath) == nil {
					return true
				}
			}
		}
	}
	if t.passes == 0 && t.o.PrevRoot != "" {
		if old, ok := t.o.Prev[rel]; ok && old == sigOf(st) {
			return os.Link(filepath.Join(t.o.PrevRoot, rel), dstPath) == nil
		}
	}
	return false
}

var errChanged = errors.New("replaced while copying")

// copyFile copies the regular file name (relative to dirfd, not followed)
// to dst, with the source's owner, xattrs, mode and times; it returns the
// source's state as of before the copy.
func (t *Tree) copyFile(dirfd int, name, dst string, st *unix.Stat_t) (unix.Stat_t, int64, error) {
	// O_NONBLOCK: a fifo swapped in since the stat must not block us;
	// the fstat below then refuses it.
	var now unix.Stat_t
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) {
			return now, 0, errChanged
		}
		return now, 0, err
	}
	src := os.NewFile(uintptr(fd), name)
	defer src.Close()
	if err := unix.Fstat(fd, &now); err != nil {
		return now, 0, err
	}
	if now.Mode&unix.S_IFMT != unix.S_IFREG || now.Ino != st.Ino || now.Dev != st.Dev {
		return now, 0, errChanged
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		return now, 0, err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return now, 0, err
	}
	n, err := io.Copy(out, src) // copy_file_range where the kernel can
	if err == nil {
		err = t.meta(fd, "", &now, unix.S_IFREG, int(out.Fd()))
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return now, n, err
}

// meta gives the copy (open as dstfd, or at path dst) the owner, xattrs,
// mode and times of the source (open as srcfd, state st). Owner first:
// chown clears setuid bits and file capabilities.
func (t *Tree) meta(srcfd int, dst string, st *unix.Stat_t, kind uint32, dstfd ...int) error {
	fd := -1
	if len(dstfd) > 0 {
		fd = dstfd[0]
	} else {
		var err error
		fd, err = unix.Open(dst, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_DIRECTORY, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
	}
	if err := unix.Fchown(fd, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if t.o.Xattr != nil {
		if err := copyXattrs(srcfd, fd, t.o.Xattr); err != nil {
			return err
		}
	}
	if err := unix.Fchmod(fd, st.Mode&07777); err != nil {
		return err
	}
	return futimens(fd, st.Atim, st.Mtim)
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

// setOwnerTimes gives a symlink (ours) the owner and times of st.
func setOwnerTimes(path string, st *unix.Stat_t) error {
	if err := unix.Lchown(path, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	return unix.UtimesNanoAt(unix.AT_FDCWD, path, []unix.Timespec{st.Atim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW)
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

// readNames lists an open directory (through a dup: os.File owns its fd).
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
