package fsnodes

import (
	"context"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/memohfs/memohfs/control"
)

// The files of a connection, as a table (Inferno's devcmd.c has the same
// five). The streams are direct-I/O and FOPEN_STREAM: no page cache, no
// offsets, and no f_pos lock, so a read blocked on one fd does not hold
// up a write on the same fd (data opened O_RDWR).
type connFileSpec struct {
	name     string
	file     control.ConnFile
	mode     uint32
	readOnly bool
	stream   bool
}

var connFiles = []connFileSpec{
	{name: "ctl", file: control.FileCtl, mode: 0o600},
	{name: "data", file: control.FileData, mode: 0o600, stream: true},
	{name: "stderr", file: control.FileStderr, mode: 0o400, readOnly: true, stream: true},
	{name: "wait", file: control.FileWait, mode: 0o400, readOnly: true, stream: true},
	{name: "status", file: control.FileStatus, mode: 0o400, readOnly: true},
}

// streamOpen: what the stream files are opened with.
const streamOpen = fuse.FOPEN_DIRECT_IO | fuse.FOPEN_STREAM | fuse.FOPEN_NONSEEKABLE

// connFile is one of /M/<bot>/cmd/<N>/{ctl,data,stderr,wait,status}.
type connFile struct {
	fs.Inode
	d    *connDir
	spec connFileSpec
}

var _ fs.NodeGetattrer = (*connFile)(nil)

// Getattr: the times are when the connection was made (a file of a
// connection that is gone keeps its mode, as an open fd may still ask).
func (f *connFile) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	var made time.Time
	if conn, err := f.d.conn(); err == nil {
		made = conn.Made()
	}
	synthFile(&out.Attr, f.spec.mode, f.d.b.owner, 0, made)
	out.SetTimeout(uncached)
	return 0
}

var _ fs.NodeSetattrer = (*connFile)(nil)

// Setattr accepts truncation (`echo kill > ctl` opens with O_TRUNC) and
// nothing else changes.
func (f *connFile) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return f.Getattr(ctx, fh, out)
}

var _ fs.NodeOpener = (*connFile)(nil)

func (f *connFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	read, write := accessOf(flags)
	if write && f.spec.readOnly {
		return nil, 0, syscall.EACCES
	}
	conn, err := f.d.conn()
	if err != nil {
		return nil, 0, errnoOf(err)
	}
	if err := conn.Open(f.spec.file, read, write); err != nil {
		return nil, 0, errnoOf(err)
	}
	h := &connHandle{conn: conn, file: f.spec.file, read: read, write: write}
	if f.spec.file == control.FileStatus {
		h.text = []byte(conn.Status())
	}
	if f.spec.stream {
		return h, streamOpen, 0
	}
	return h, fuse.FOPEN_DIRECT_IO, 0
}

// connHandle is an open file of a connection; its release is counted
// (the last one ends the connection, see control.Conn.Release).
type connHandle struct {
	conn        *control.Conn
	file        control.ConnFile
	read, write bool

	mu       sync.Mutex
	text     []byte // status: rendered at open and at each read from 0
	waitSent bool   // wait: the line was read
	released bool
}

var _ fs.FileReader = (*connHandle)(nil)

func (h *connHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	switch h.file {
	case control.FileCtl:
		return readAt([]byte(h.conn.Number()), dest, off), 0
	case control.FileStatus:
		h.mu.Lock()
		defer h.mu.Unlock()
		if off == 0 {
			h.text = []byte(h.conn.Status())
		}
		return readAt(h.text, dest, off), 0
	case control.FileWait:
		h.mu.Lock()
		sent := h.waitSent
		h.mu.Unlock()
		if sent {
			return fuse.ReadResultData(nil), 0
		}
		line, err := h.conn.Wait(ctx)
		if err != nil {
			return nil, errnoOf(err)
		}
		h.mu.Lock()
		h.waitSent = true
		h.mu.Unlock()
		return readAt([]byte(line), dest, 0), 0
	case control.FileData:
		n, err := h.conn.ReadData(ctx, dest)
		if n == 0 && err != nil {
			return nil, errnoOf(err)
		}
		return fuse.ReadResultData(dest[:n]), 0
	case control.FileStderr:
		n, err := h.conn.ReadStderr(ctx, dest)
		if n == 0 && err != nil {
			return nil, errnoOf(err)
		}
		return fuse.ReadResultData(dest[:n]), 0
	}
	return nil, syscall.EBADF
}

var _ fs.FileWriter = (*connHandle)(nil)

func (h *connHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	switch h.file {
	case control.FileCtl:
		if err := h.conn.Ctl(ctx, string(data)); err != nil {
			return 0, errnoOf(err)
		}
		return uint32(len(data)), 0
	case control.FileData:
		n, err := h.conn.WriteData(ctx, data)
		if n == 0 && err != nil {
			return 0, errnoOf(err)
		}
		return uint32(n), 0
	}
	return 0, syscall.EBADF
}

var _ fs.FileReleaser = (*connHandle)(nil)

func (h *connHandle) Release(ctx context.Context) syscall.Errno {
	h.mu.Lock()
	done := h.released
	h.released = true
	h.mu.Unlock()
	if !done {
		h.conn.Release(h.file, h.read, h.write)
	}
	return 0
}
