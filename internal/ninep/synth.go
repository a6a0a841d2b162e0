package ninep

import (
	"context"
	"sync"
	"syscall"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"github.com/memohfs/memohfs/internal/vtree"
)

// attacher gives a connection its root fid. Tattach's uname, uid and
// aname are ignored: who the peer is was settled at accept.
type attacher struct{ k *conn }

func (a *attacher) Attach() (p9.File, error) {
	return &synth{k: a.k, n: a.k.s.root, path: "/"}, nil
}

// synth is a fid on a synthetic node (vtree): the root, a bot dir, ctl,
// events, snapshots/, cmd/... Walking into a Tree (data/, skills/, a
// snapshot's views) gives a host fid (host.go).
type synth struct {
	refuse
	k    *conn
	n    vtree.Node
	path string // for QIDs of nodes with no inode number, and logs

	mu   sync.Mutex
	h    vtree.Handle  // once opened as a file
	list []vtree.Entry // once opened as a dir: the listing Readdir serves
}

var _ p9.File = (*synth)(nil)

func (f *synth) attr() (vtree.Attr, error) {
	a, err := f.n.Attr(f.k.ctx)
	if err != nil {
		return a, err
	}
	if a.Ino == 0 {
		a.Ino = vtree.StableIno("9p", f.path)
	}
	return a, nil
}

// Walk goes one name down (the library walks a name at a time); no names
// clones the fid. A dir is walked only with search permission on it.
func (f *synth) Walk(names []string) ([]p9.QID, p9.File, error) {
	if len(names) == 0 {
		return nil, &synth{k: f.k, n: f.n, path: f.path}, nil
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

// walkFrom walks one name from a fid of either kind.
func walkFrom(from p9.File, name string) (p9.File, p9.QID, error) {
	switch f := from.(type) {
	case *synth:
		return f.walkOne(name)
	case *host:
		return f.walkOne(name)
	}
	return nil, p9.QID{}, linux.EINVAL
}

func (f *synth) walkOne(name string) (p9.File, p9.QID, error) {
	d, ok := f.n.(vtree.Dir)
	if !ok {
		return nil, p9.QID{}, linux.ENOTDIR
	}
	a, err := f.attr()
	if err != nil {
		return nil, p9.QID{}, errOf(err)
	}
	if !f.k.may(a, 1) {
		return nil, p9.QID{}, linux.EACCES
	}
	n, err := d.Lookup(f.k.ctx, name)
	if err != nil {
		return nil, p9.QID{}, errOf(err)
	}
	path := f.path + name
	if t, ok := n.(*vtree.Tree); ok {
		h, err := openTree(f.k, t, path)
		if err != nil {
			return nil, p9.QID{}, errOf(err)
		}
		ha, err := h.attr()
		if err != nil {
			h.Close()
			return nil, p9.QID{}, errOf(err)
		}
		return h, qidOf(ha), nil
	}
	nf := &synth{k: f.k, n: n, path: path + "/"}
	na, err := nf.attr()
	if err != nil {
		return nil, p9.QID{}, errOf(err)
	}
	return nf, qidOf(na), nil
}

func (f *synth) WalkGetAttr(names []string) ([]p9.QID, p9.File, p9.AttrMask, p9.Attr, error) {
	return walkGetAttr(f, names)
}

func (f *synth) GetAttr(req p9.AttrMask) (p9.QID, p9.AttrMask, p9.Attr, error) {
	a, err := f.attr()
	if err != nil {
		return p9.QID{}, p9.AttrMask{}, p9.Attr{}, errOf(err)
	}
	return qidOf(a), p9.AttrMaskAll, p9Attr(a), nil
}

// SetAttr accepts a truncation of a file the peer may write (`echo start
// > ctl` truncates first) and changes nothing, as on the FUSE mount.
func (f *synth) SetAttr(valid p9.SetAttrMask, attr p9.SetAttr) error {
	a, err := f.attr()
	if err != nil {
		return errOf(err)
	}
	if valid.Permissions || valid.UID || valid.GID || valid.ATime || valid.MTime || valid.CTime {
		return linux.EPERM
	}
	if valid.Size && !f.k.may(a, 2) {
		return linux.EACCES
	}
	return nil
}

// openFlags are the Tlopen flags passed on to the tree (9P2000.L's flags
// are Linux's for these).
const openFlags = syscall.O_ACCMODE | syscall.O_NONBLOCK | syscall.O_TRUNC | syscall.O_APPEND

// Open opens a file for its handle, or a dir for Readdir, after checking
// the peer's rights against the node's mode.
func (f *synth) Open(mode p9.OpenFlags) (p9.QID, uint32, error) {
	a, err := f.attr()
	if err != nil {
		return p9.QID{}, 0, errOf(err)
	}
	flags := int(mode) & openFlags
	want := uint32(4)
	switch flags & syscall.O_ACCMODE {
	case syscall.O_WRONLY:
		want = 2
	case syscall.O_RDWR:
		want = 6
	}
	if !f.k.may(a, want) {
		return p9.QID{}, 0, linux.EACCES
	}
	switch n := f.n.(type) {
	case vtree.Dir:
		list, err := n.List(f.k.ctx)
		if err != nil {
			return p9.QID{}, 0, errOf(err)
		}
		f.mu.Lock()
		f.list = list
		f.mu.Unlock()
	case vtree.File:
		h, err := n.Open(f.k.ctx, flags)
		if err != nil {
			return p9.QID{}, 0, errOf(err)
		}
		f.mu.Lock()
		f.h = h
		f.mu.Unlock()
	default:
		return p9.QID{}, 0, linux.EINVAL
	}
	return qidOf(a), 0, nil
}

func (f *synth) handle() (vtree.Handle, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.h == nil {
		return nil, linux.EBADF
	}
	return f.h, nil
}

// ReadAt reads without a request context (the patched library passes
// one: ReadAtContext).
func (f *synth) ReadAt(p []byte, off int64) (int, error) {
	return f.ReadAtContext(f.k.ctx, p, off)
}

// ReadAtContext reads from the handle; a read that waits (events at its
// end, a cmd stream, wait) ends when ctx does: a Tflush of this read,
// the connection's end, or the server's.
func (f *synth) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	h, err := f.handle()
	if err != nil {
		return 0, err
	}
	ctx, done := f.k.reqCtx(ctx)
	defer done()
	f.k.s.reading.Add(1)
	defer f.k.s.reading.Add(-1)
	n, err := h.Read(ctx, p, off)
	if n == 0 && err != nil {
		return 0, errOf(err)
	}
	return n, nil
}

func (f *synth) WriteAt(p []byte, off int64) (int, error) {
	return f.WriteAtContext(f.k.ctx, p, off)
}

// WriteAtContext writes to the handle (a ctl's verbs, a command's
// stdin); ctx ends it as it ends reads.
func (f *synth) WriteAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	h, err := f.handle()
	if err != nil {
		return 0, err
	}
	ctx, done := f.k.reqCtx(ctx)
	defer done()
	n, err := h.Write(ctx, p, off)
	if n == 0 && err != nil {
		return 0, errOf(err)
	}
	return n, nil
}

// Readdir serves the listing taken at open, from offset (each entry's
// offset is the next one's index); the library trims it to count bytes.
func (f *synth) Readdir(offset uint64, count uint32) (p9.Dirents, error) {
	f.mu.Lock()
	list := f.list
	f.mu.Unlock()
	if list == nil {
		return nil, linux.EBADF
	}
	var out p9.Dirents
	for i := offset; i < uint64(len(list)); i++ {
		e := list[i]
		ino := e.Ino
		if ino == 0 {
			ino = vtree.StableIno("9p", f.path+e.Name+"/")
		}
		t := typeOf(e.Mode)
		out = append(out, p9.Dirent{QID: p9.QID{Type: t, Path: ino}, Offset: i + 1, Type: t, Name: e.Name})
	}
	return out, nil
}

// Mkdir makes a bot (in the root) or takes a snapshot (in snapshots/).
func (f *synth) Mkdir(name string, perm p9.FileMode, _ p9.UID, _ p9.GID) (p9.QID, error) {
	d, ok := f.n.(interface {
		vtree.Dir
		vtree.Mkdirer
	})
	if !ok {
		return p9.QID{}, linux.EPERM
	}
	if err := f.mayChange(); err != nil {
		return p9.QID{}, err
	}
	if err := d.Mkdir(f.k.ctx, name); err != nil {
		return p9.QID{}, errOf(err)
	}
	n, err := d.Lookup(f.k.ctx, name)
	if err != nil {
		return p9.QID{}, errOf(err)
	}
	a, err := (&synth{k: f.k, n: n, path: f.path + name + "/"}).attr()
	if err != nil {
		return p9.QID{}, errOf(err)
	}
	return qidOf(a), nil
}

// mayChange checks write and search permission on the dir.
func (f *synth) mayChange() error {
	a, err := f.attr()
	if err != nil {
		return errOf(err)
	}
	if !f.k.may(a, 3) {
		return linux.EACCES
	}
	return nil
}

// UnlinkAt with AT_REMOVEDIR deletes a bot or drops a snapshot; nothing
// else of the synthetic tree can be removed.
func (f *synth) UnlinkAt(name string, flags uint32) error {
	d, ok := f.n.(vtree.Rmdirer)
	if !ok {
		return linux.EPERM
	}
	if flags&atRemoveDir == 0 {
		return linux.EISDIR
	}
	if err := f.mayChange(); err != nil {
		return err
	}
	if err := f.sticky(name); err != nil {
		return err
	}
	return errOf(d.Rmdir(f.k.ctx, name))
}

// sticky applies the sticky bit (/M is 1777, like /tmp): in such a dir
// only root, the dir's owner or the entry's may remove it (EPERM, as the
// kernel answers).
func (f *synth) sticky(name string) error {
	a, err := f.attr()
	if err != nil {
		return errOf(err)
	}
	if a.Mode&syscall.S_ISVTX == 0 || f.k.who.Uid == 0 || a.Uid == f.k.who.Uid {
		return nil
	}
	d := f.n.(vtree.Dir)
	n, err := d.Lookup(f.k.ctx, name)
	if err != nil {
		return errOf(err)
	}
	ca, err := n.Attr(f.k.ctx)
	if err != nil {
		return errOf(err)
	}
	if ca.Uid != f.k.who.Uid {
		return linux.EPERM
	}
	return nil
}

// atRemoveDir is AT_REMOVEDIR, as Tunlinkat carries it.
const atRemoveDir = 0x200

// Close (clunk) ends what Open began: a connection file's open count,
// an events reader.
func (f *synth) Close() error {
	f.mu.Lock()
	h := f.h
	f.h, f.list = nil, nil
	f.mu.Unlock()
	if h != nil {
		return errOf(h.Close())
	}
	return nil
}
