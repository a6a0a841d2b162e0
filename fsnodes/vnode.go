package fsnodes

import (
	"context"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/memohfs/memohfs/internal/vtree"
)

// vfile serves a synthetic file of the tree (vtree: ctl, status, err,
// events, log, info, cmd/clone and a connection's files) to the kernel:
// what the file is and does is vtree's; this node only speaks FUSE. Its
// content is never cached (direct I/O); streams are opened as such
// (FOPEN_STREAM: no offsets, reads in order).
type vfile struct {
	fs.Inode
	f vtree.File
}

// vctx gives ctx the FUSE request's caller, for the tree.
func vctx(ctx context.Context) context.Context {
	if c, ok := fuse.FromContext(ctx); ok {
		return vtree.WithCaller(ctx, vtree.Caller{Uid: c.Uid, Gid: c.Gid, Pid: c.Pid})
	}
	return ctx
}

// fillAttr copies a tree node's attributes into a FUSE attr.
func fillAttr(a *fuse.Attr, v vtree.Attr) {
	a.Mode = v.Mode
	a.Nlink = v.Nlink
	a.Uid, a.Gid = v.Uid, v.Gid
	a.Size = v.Size
	a.Blocks = v.Blocks
	a.Blksize = v.Blksize
	a.Rdev = uint32(v.Rdev)
	if v.Ino != 0 {
		a.Ino = v.Ino
	}
	stampTime(&a.Mtime, &a.Mtimensec, v.Mtime)
	at, ct := v.Atime, v.Ctime
	if at.IsZero() {
		at = v.Mtime
	}
	if ct.IsZero() {
		ct = v.Mtime
	}
	stampTime(&a.Atime, &a.Atimensec, at)
	stampTime(&a.Ctime, &a.Ctimensec, ct)
}

func stampTime(s *uint64, ns *uint32, t time.Time) {
	if t.IsZero() {
		return
	}
	*s, *ns = uint64(t.Unix()), uint32(t.Nanosecond())
}

// nodeAttr fills out from n's Attr.
func nodeAttr(ctx context.Context, n vtree.Node, out *fuse.Attr) syscall.Errno {
	v, err := n.Attr(vctx(ctx))
	if err != nil {
		return errnoOf(err)
	}
	fillAttr(out, v)
	return 0
}

var _ fs.NodeGetattrer = (*vfile)(nil)

func (f *vfile) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.SetTimeout(uncached)
	return nodeAttr(ctx, f.f, &out.Attr)
}

var _ fs.NodeSetattrer = (*vfile)(nil)

// Setattr accepts truncation (`echo start > ctl` opens with O_TRUNC) and
// changes nothing.
func (f *vfile) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return f.Getattr(ctx, fh, out)
}

// streamOpen is how a stream opens: no page cache, no offsets, reads
// and writes in order.
const streamOpen = fuse.FOPEN_DIRECT_IO | fuse.FOPEN_STREAM | fuse.FOPEN_NONSEEKABLE

var _ fs.NodeOpener = (*vfile)(nil)

func (f *vfile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	h, err := f.f.Open(vctx(ctx), int(flags))
	if err != nil {
		return nil, 0, errnoOf(err)
	}
	if fh, ok := h.(*vtree.FdHandle); ok {
		// A host file (log): the kernel may read it itself (passthrough).
		return newDataFile(fh.TakeFd()), 0, 0
	}
	if h.Kind() == vtree.Stream {
		return &vhandle{h: h}, streamOpen, 0
	}
	return &vhandle{h: h}, fuse.FOPEN_DIRECT_IO, 0
}

// vhandle is an open vfile.
type vhandle struct{ h vtree.Handle }

var _ fs.FileReader = (*vhandle)(nil)

func (h *vhandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n, err := h.h.Read(vctx(ctx), dest, off)
	if n == 0 && err != nil {
		return nil, errnoOf(err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

var _ fs.FileWriter = (*vhandle)(nil)

func (h *vhandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	n, err := h.h.Write(vctx(ctx), data, off)
	if n == 0 && err != nil {
		return 0, errnoOf(err)
	}
	return uint32(n), 0
}

var _ fs.FileReleaser = (*vhandle)(nil)

func (h *vhandle) Release(ctx context.Context) syscall.Errno {
	return errnoOf(h.h.Close())
}
