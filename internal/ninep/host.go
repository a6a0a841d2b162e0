package ninep

import (
	"encoding/binary"
	"strconv"
	"sync"
	"syscall"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"github.com/memohfs/memohfs/internal/hostfs"
	"github.com/memohfs/memohfs/internal/vtree"
	"golang.org/x/sys/unix"
)

// host is a fid on a file of a Tree (data/, skills/, a snapshot's views):
// one O_PATH fd of the host file, taken from its parent's fd without
// following a link (the FUSE face's dataNode does the same, with the
// same hostfs calls). A name is never walked again from the tree's base:
// a bot that swaps a directory on the way for a symlink changes nothing
// for a fid already walked. Calls that open, create, remove, rename or
// change run as the peer (conn.asCaller): the host kernel checks and
// applies its rights, as for a local process.
type host struct {
	refuse
	k    *conn
	t    *vtree.Tree
	fd   int // O_PATH|O_NOFOLLOW
	path string
	// root names the tree (its base dir and prefix): renames and links
	// stay inside one tree, as on the FUSE face (EXDEV between bots, or
	// between data/ and skills/).
	root string

	mu    sync.Mutex
	io    int // the file opened for I/O; -1 until Open
	privs bool
	list  []dirent // a dir opened for Readdir
}

var _ p9.File = (*host)(nil)

// openTree opens the root of tree t: its base (memohfs's own path: the
// bot's data dir, a snapshot's copy or rootfs view), then its prefix
// beneath it without following links (skills/ is data/.skills, made when
// missing).
func openTree(k *conn, t *vtree.Tree, path string) (*host, error) {
	dir, err := t.Resolve(k.ctx)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if t.Prefix != "" {
		base := fd
		defer unix.Close(base)
		fd, err = hostfs.OpenBeneath(base, t.Prefix, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
		if err == unix.ENOENT && t.MakePrefix && !t.ReadOnly {
			if err = unix.Mkdirat(base, t.Prefix, 0o755); err == nil || err == unix.EEXIST {
				fd, err = hostfs.OpenBeneath(base, t.Prefix, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
			}
		}
		if err != nil {
			return nil, err
		}
	}
	return &host{k: k, t: t, fd: fd, path: path, root: dir + "\x00" + t.Prefix, io: -1}, nil
}

func (f *host) child(fd int, name string) *host {
	return &host{k: f.k, t: f.t, fd: fd, path: f.path + "/" + name, root: f.root, io: -1}
}

func (f *host) attr() (vtree.Attr, error) {
	var x unix.Statx_t
	if err := hostfs.Statx(f.fd, "", &x); err != nil {
		return vtree.Attr{}, err
	}
	return attrOfStatx(&x), nil
}

func (f *host) writable() error {
	if f.t.ReadOnly {
		return linux.EROFS
	}
	return nil
}

// Walk: no names clones the fid (a new fd of the same file).
func (f *host) Walk(names []string) ([]p9.QID, p9.File, error) {
	if len(names) == 0 {
		// A clone of the fid: the same O_PATH file (which has no offset
		// to share).
		fd, err := unix.FcntlInt(uintptr(f.fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, nil, errOf(err)
		}
		nf := &host{k: f.k, t: f.t, fd: fd, path: f.path, root: f.root, io: -1}
		return nil, nf, nil
	}
	var cur p9.File = f
	var qids []p9.QID
	for _, name := range names {
		nf, qid, err := walkFrom(cur, name)
		if cur != p9.File(f) {
			cur.Close()
		}
		if err != nil {
			return nil, nil, err
		}
		qids, cur = append(qids, qid), nf
	}
	return qids, cur, nil
}

// walkOne opens name beneath the fid's dir as the peer (who needs search
// permission on it), never following it.
func (f *host) walkOne(name string) (p9.File, p9.QID, error) {
	fd := -1
	err := f.k.asCaller(func() error {
		var err error
		fd, err = hostfs.OpenBeneath(f.fd, name, unix.O_PATH|unix.O_NOFOLLOW, 0)
		return err
	})
	if err != nil {
		return nil, p9.QID{}, errOf(err)
	}
	nf := f.child(fd, name)
	a, err := nf.attr()
	if err != nil {
		nf.Close()
		return nil, p9.QID{}, errOf(err)
	}
	return nf, qidOf(a), nil
}

func (f *host) WalkGetAttr(names []string) ([]p9.QID, p9.File, p9.AttrMask, p9.Attr, error) {
	return walkGetAttr(f, names)
}

func (f *host) GetAttr(req p9.AttrMask) (p9.QID, p9.AttrMask, p9.Attr, error) {
	a, err := f.attr()
	if err != nil {
		return p9.QID{}, p9.AttrMask{}, p9.Attr{}, errOf(err)
	}
	return qidOf(a), p9.AttrMaskAll, p9Attr(a), nil
}

// hostOpenFlags are the Tlopen flags passed on to the host file.
const hostOpenFlags = unix.O_ACCMODE | unix.O_APPEND | unix.O_TRUNC | unix.O_NOATIME | unix.O_SYNC | unix.O_DSYNC | unix.O_DIRECT

// Open opens a regular file for I/O, or a dir for Readdir, through the
// fid's fd, as the peer. A symlink, device, fifo or socket is never
// opened (hostfs.RegularFile says what the open gets instead).
func (f *host) Open(mode p9.OpenFlags) (p9.QID, uint32, error) {
	flags := int(mode) & hostOpenFlags
	if flags&unix.O_ACCMODE != unix.O_RDONLY || flags&unix.O_TRUNC != 0 {
		if err := f.writable(); err != nil {
			return p9.QID{}, 0, err
		}
	}
	a, err := f.attr()
	if err != nil {
		return p9.QID{}, 0, errOf(err)
	}
	if a.IsDir() {
		list, err := f.readDir()
		if err != nil {
			return p9.QID{}, 0, errOf(err)
		}
		f.mu.Lock()
		f.list = list
		f.mu.Unlock()
		return qidOf(a), 0, nil
	}
	if e := hostfs.RegularFile(f.fd); e != 0 {
		return p9.QID{}, 0, errOf(e)
	}
	io := -1
	if err := f.k.asCaller(func() error {
		var err error
		io, err = hostfs.Reopen(f.fd, flags)
		return err
	}); err != nil {
		return p9.QID{}, 0, errOf(err)
	}
	f.mu.Lock()
	f.io = io
	// A write by someone other than root clears setuid and setgid, as
	// the kernel does for a local writer (memohfs writes as root, which
	// the kernel would let keep them).
	f.privs = f.k.who.Uid != 0 && flags&unix.O_ACCMODE != unix.O_RDONLY && a.Mode&(unix.S_ISUID|unix.S_ISGID) != 0
	f.mu.Unlock()
	return qidOf(a), 0, nil
}

func (f *host) ioFd() (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.io < 0 {
		return -1, linux.EBADF
	}
	return f.io, nil
}

func (f *host) ReadAt(p []byte, off int64) (int, error) {
	fd, err := f.ioFd()
	if err != nil {
		return 0, err
	}
	n, err := unix.Pread(fd, p, off)
	if err != nil {
		return 0, errOf(err)
	}
	return n, nil
}

func (f *host) WriteAt(p []byte, off int64) (int, error) {
	fd, err := f.ioFd()
	if err != nil {
		return 0, err
	}
	n, err := unix.Pwrite(fd, p, off)
	if err != nil {
		return 0, errOf(err)
	}
	f.dropPrivs()
	return n, nil
}

// dropPrivs clears setuid, and setgid where it marks an executable, after
// the first write of a peer other than root.
func (f *host) dropPrivs() {
	f.mu.Lock()
	do := f.privs
	f.privs = false
	f.mu.Unlock()
	if !do {
		return
	}
	var x unix.Statx_t
	if hostfs.Statx(f.fd, "", &x) != nil {
		return
	}
	m := uint32(x.Mode) & 0o7777 &^ unix.S_ISUID
	if m&0o010 != 0 {
		m &^= unix.S_ISGID
	}
	if m != uint32(x.Mode)&0o7777 {
		hostfs.Fchmodat2(f.fd, "", m, unix.AT_EMPTY_PATH)
	}
}

func (f *host) FSync() error {
	fd, err := f.ioFd()
	if err != nil {
		return err
	}
	return errOf(unix.Fsync(fd))
}

// dirent is a directory entry as getdents gives it.
type dirent struct {
	ino  uint64
	typ  uint8
	name string
}

// readDir lists the dir, opened through its fd as the peer (who needs
// read permission).
func (f *host) readDir() ([]dirent, error) {
	fd := -1
	if err := f.k.asCaller(func() error {
		var err error
		fd, err = hostfs.Reopen(f.fd, unix.O_RDONLY|unix.O_DIRECTORY)
		return err
	}); err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var out []dirent
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return out, nil
		}
		for b := buf[:n]; len(b) >= 19; {
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			if reclen < 19 || reclen > len(b) {
				break
			}
			name := b[19:reclen]
			for i, c := range name {
				if c == 0 {
					name = name[:i]
					break
				}
			}
			if s := string(name); s != "." && s != ".." {
				out = append(out, dirent{ino: binary.NativeEndian.Uint64(b[0:8]), typ: b[18], name: s})
			}
			b = b[reclen:]
		}
	}
}

// Readdir serves the listing taken at open, from offset.
func (f *host) Readdir(offset uint64, count uint32) (p9.Dirents, error) {
	f.mu.Lock()
	list := f.list
	f.mu.Unlock()
	if list == nil {
		return nil, linux.EBADF
	}
	var out p9.Dirents
	for i := offset; i < uint64(len(list)); i++ {
		e := list[i]
		t := dtType(e.typ)
		out = append(out, p9.Dirent{QID: p9.QID{Type: t, Path: e.ino}, Offset: i + 1, Type: t, Name: e.name})
	}
	return out, nil
}

func dtType(t uint8) p9.QIDType {
	switch t {
	case unix.DT_DIR:
		return p9.TypeDir
	case unix.DT_LNK:
		return p9.TypeSymlink
	}
	return p9.TypeRegular
}

// Create makes name with O_CREAT|O_EXCL as the peer, so it is the peer's
// from its first instant: a symlink at name (even a dangling one) is
// never created through, and a fifo or device is never opened. The fid
// becomes the new file, open.
func (f *host) Create(name string, mode p9.OpenFlags, perm p9.FileMode, _ p9.UID, _ p9.GID) (p9.File, p9.QID, uint32, error) {
	if err := f.writable(); err != nil {
		return nil, p9.QID{}, 0, err
	}
	io := -1
	flags := int(mode)&hostOpenFlags | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC
	if err := f.k.asCaller(func() error {
		var err error
		io, err = unix.Openat(f.fd, name, flags, uint32(perm.Permissions()))
		return err
	}); err != nil {
		return nil, p9.QID{}, 0, errOf(err)
	}
	pfd, e := hostfs.PathFd(io)
	if e != 0 {
		return nil, p9.QID{}, 0, errOf(e)
	}
	nf := f.child(pfd, name)
	nf.io = io
	a, err := nf.attr()
	if err != nil {
		nf.Close()
		return nil, p9.QID{}, 0, errOf(err)
	}
	return nf, qidOf(a), 0, nil
}

// made answers the QID of what a call just made by name.
func (f *host) made(name string) (p9.QID, error) {
	var x unix.Statx_t
	if err := hostfs.Statx(f.fd, name, &x); err != nil {
		return p9.QID{}, errOf(err)
	}
	return qidOf(attrOfStatx(&x)), nil
}

func (f *host) Mkdir(name string, perm p9.FileMode, _ p9.UID, _ p9.GID) (p9.QID, error) {
	if err := f.writable(); err != nil {
		return p9.QID{}, err
	}
	if err := f.k.asCaller(func() error { return unix.Mkdirat(f.fd, name, uint32(perm.Permissions())) }); err != nil {
		return p9.QID{}, errOf(err)
	}
	return f.made(name)
}

func (f *host) Symlink(target, name string, _ p9.UID, _ p9.GID) (p9.QID, error) {
	if err := f.writable(); err != nil {
		return p9.QID{}, err
	}
	if err := f.k.asCaller(func() error { return unix.Symlinkat(target, f.fd, name) }); err != nil {
		return p9.QID{}, errOf(err)
	}
	return f.made(name)
}

// Link gives the target's file another name through the target's fd (its
// /proc/self/fd link names the file itself), as the peer, so the host's
// protected_hardlinks rule applies.
func (f *host) Link(target p9.File, name string) error {
	if err := f.writable(); err != nil {
		return err
	}
	t, ok := target.(*host)
	if !ok || t.root != f.root {
		return linux.EXDEV
	}
	return errOf(f.k.asCaller(func() error {
		return unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(t.fd), f.fd, name, unix.AT_SYMLINK_FOLLOW)
	}))
}

func (f *host) RenameAt(oldName string, newDir p9.File, newName string) error {
	if err := f.writable(); err != nil {
		return err
	}
	nd, ok := newDir.(*host)
	if !ok || nd.root != f.root {
		return linux.EXDEV
	}
	return errOf(f.k.asCaller(func() error { return unix.Renameat(f.fd, oldName, nd.fd, newName) }))
}

func (f *host) UnlinkAt(name string, flags uint32) error {
	if err := f.writable(); err != nil {
		return err
	}
	return errOf(f.k.asCaller(func() error { return unix.Unlinkat(f.fd, name, int(flags&atRemoveDir)) }))
}

func (f *host) Readlink() (string, error) {
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(f.fd, "", buf)
	if err != nil {
		return "", errOf(err)
	}
	return string(buf[:n]), nil
}

// SetAttr changes mode, owner, size and times through the fid's fd as the
// peer: the host decides who may.
func (f *host) SetAttr(valid p9.SetAttrMask, attr p9.SetAttr) error {
	if err := f.writable(); err != nil {
		return err
	}
	if valid.Permissions {
		if err := f.k.asCaller(func() error {
			return hostfs.Fchmodat2(f.fd, "", uint32(attr.Permissions)&0o7777, unix.AT_EMPTY_PATH)
		}); err != nil {
			return errOf(err)
		}
	}
	if valid.UID || valid.GID {
		u, g := -1, -1
		if valid.UID {
			u = int(attr.UID)
		}
		if valid.GID {
			g = int(attr.GID)
		}
		if err := f.k.asCaller(func() error {
			return unix.Fchownat(f.fd, "", u, g, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW)
		}); err != nil {
			return errOf(err)
		}
	}
	if valid.Size {
		if err := f.truncate(int64(attr.Size)); err != nil {
			return errOf(err)
		}
	}
	if valid.ATime || valid.MTime {
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		if valid.ATime {
			ts[0] = setTime(valid.ATimeNotSystemTime, attr.ATimeSeconds, attr.ATimeNanoSeconds)
		}
		if valid.MTime {
			ts[1] = setTime(valid.MTimeNotSystemTime, attr.MTimeSeconds, attr.MTimeNanoSeconds)
		}
		if err := f.k.asCaller(func() error {
			return unix.UtimesNanoAt(f.fd, "", ts, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW)
		}); err != nil {
			return errOf(err)
		}
	}
	return nil
}

func setTime(given bool, s, ns uint64) unix.Timespec {
	if !given {
		return unix.Timespec{Nsec: unix.UTIME_NOW}
	}
	return unix.Timespec{Sec: int64(s), Nsec: int64(ns)}
}

// truncate is ftruncate of the file opened for writing, or truncate(2)
// of the fid's file: reopened for writing as the peer (who needs write
// permission), only a regular file.
func (f *host) truncate(size int64) error {
	f.mu.Lock()
	io := f.io
	f.mu.Unlock()
	if io >= 0 {
		if err := unix.Ftruncate(io, size); err != linux.EBADF && err != linux.EINVAL {
			return err
		}
	}
	if e := hostfs.RegularFile(f.fd); e != 0 {
		if e == syscall.EISDIR {
			return linux.EISDIR
		}
		return linux.EINVAL
	}
	return f.k.asCaller(func() error {
		w, err := hostfs.Reopen(f.fd, unix.O_WRONLY)
		if err != nil {
			return err
		}
		defer unix.Close(w)
		return unix.Ftruncate(w, size)
	})
}

func (f *host) StatFS() (p9.FSStat, error) {
	var s unix.Statfs_t
	if err := unix.Fstatfs(f.fd, &s); err != nil {
		return p9.FSStat{}, errOf(err)
	}
	return p9.FSStat{Type: v9fsMagic, BlockSize: uint32(s.Bsize), Blocks: s.Blocks, BlocksFree: s.Bfree,
		BlocksAvailable: s.Bavail, Files: s.Files, FilesFree: s.Ffree, NameLength: uint32(s.Namelen)}, nil
}

// Close (clunk) closes the fid's fds.
func (f *host) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.io >= 0 {
		unix.Close(f.io)
		f.io = -1
	}
	if f.fd >= 0 {
		unix.Close(f.fd)
		f.fd = -1
	}
	f.list = nil
	return nil
}
