package vtree

import (
	"context"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/memohfs/memohfs/control"
)

// CmdDir is <bot>/cmd: clone, and a dir per connection (Inferno's
// cmd(3)). Opening clone makes a connection and gives its ctl:
//
//	$ exec 3<> /M/b1/cmd/clone; read n <&3     # n is the connection
//	$ echo 'exec uname -a' >&3; cat /M/b1/cmd/$n/data
type CmdDir struct{ b *Bot }

func (d *CmdDir) Attr(ctx context.Context) (Attr, error) {
	ns, err := d.b.r.c.Cmds(d.b.Name)
	if err != nil {
		return Attr{}, err
	}
	return dirAttr(0o700, d.b.Owner, len(ns), d.b.times(ctx).Created), nil
}

// Ino is the stable inode number of connection dir name.
func (d *CmdDir) Ino(name string) uint64 { return StableIno("cmd", d.b.ID, name) }

func (d *CmdDir) Lookup(ctx context.Context, name string) (Node, error) {
	if name == "clone" {
		return &CloneFile{b: d.b}, nil
	}
	n, err := strconv.Atoi(name)
	if err != nil || strconv.Itoa(n) != name || n <= 0 {
		return nil, syscall.ENOENT
	}
	if _, err := d.b.r.c.Cmd(d.b.Name, n); err != nil {
		return nil, err
	}
	return &ConnDir{b: d.b, N: n}, nil
}

func (d *CmdDir) List(ctx context.Context) ([]Entry, error) {
	ns, err := d.b.r.c.Cmds(d.b.Name)
	if err != nil {
		return nil, err
	}
	out := []Entry{{Name: "clone", Mode: syscall.S_IFREG}}
	for _, n := range ns {
		name := strconv.Itoa(n)
		out = append(out, Entry{Name: name, Mode: syscall.S_IFDIR, Ino: d.Ino(name)})
	}
	return out, nil
}

// CloneFile is cmd/clone: each open makes a connection owned by the
// caller, and reads as that connection's ctl.
type CloneFile struct{ b *Bot }

func (f *CloneFile) Attr(ctx context.Context) (Attr, error) {
	return fileAttr(0o600, f.b.Owner, 0, f.b.times(ctx).Created), nil
}

func (f *CloneFile) Open(ctx context.Context, flags int) (Handle, error) {
	c, _ := CallerOf(ctx)
	conn, err := f.b.r.c.CmdClone(ctx, f.b.Name, c.Uid)
	if err != nil {
		return nil, err
	}
	return &connHandle{conn: conn, spec: connFiles[0]}, nil
}

// ConnDir is cmd/N: ctl, data, stderr, wait and status.
type ConnDir struct {
	b *Bot
	N int
}

func (d *ConnDir) conn() (*control.Conn, error) { return d.b.r.c.Cmd(d.b.Name, d.N) }

func (d *ConnDir) Attr(ctx context.Context) (Attr, error) {
	conn, err := d.conn()
	if err != nil {
		return Attr{}, err
	}
	a := dirAttr(0o700, d.b.Owner, 0, conn.Made())
	a.Ino = StableIno("cmd", d.b.ID, strconv.Itoa(d.N))
	return a, nil
}

func (d *ConnDir) Lookup(ctx context.Context, name string) (Node, error) {
	if _, err := d.conn(); err != nil {
		return nil, err
	}
	for _, s := range connFiles {
		if s.name == name {
			return &ConnFile{d: d, spec: s}, nil
		}
	}
	return nil, syscall.ENOENT
}

func (d *ConnDir) List(ctx context.Context) ([]Entry, error) {
	if _, err := d.conn(); err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(connFiles))
	for _, s := range connFiles {
		out = append(out, Entry{Name: s.name, Mode: syscall.S_IFREG})
	}
	return out, nil
}

// connFileSpec is a file of a connection dir, as a table (Inferno's
// cmdtab): its name, what control calls it, its mode, whether it is
// read-only and whether it is a stream.
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

// ConnFile is one of a connection's files.
type ConnFile struct {
	d    *ConnDir
	spec connFileSpec
}

func (f *ConnFile) Attr(ctx context.Context) (Attr, error) {
	var made time.Time
	if conn, err := f.d.conn(); err == nil {
		made = conn.Made()
	}
	return fileAttr(f.spec.mode, f.d.b.Owner, 0, made), nil
}

// Open counts the open with the connection: it lives (and, with
// killonclose, its command runs) while any of its files is open.
func (f *ConnFile) Open(ctx context.Context, flags int) (Handle, error) {
	read, write := accessOf(flags)
	if write && f.spec.readOnly {
		return nil, syscall.EACCES
	}
	conn, err := f.d.conn()
	if err != nil {
		return nil, err
	}
	if err := conn.Open(f.spec.file, read, write); err != nil {
		return nil, err
	}
	h := &connHandle{conn: conn, spec: f.spec, read: read, write: write}
	if f.spec.file == control.FileStatus {
		h.text = []byte(conn.Status())
	}
	return h, nil
}

func accessOf(flags int) (read, write bool) {
	switch flags & syscall.O_ACCMODE {
	case syscall.O_RDONLY:
		return true, false
	case syscall.O_WRONLY:
		return false, true
	}
	return true, true
}

type connHandle struct {
	conn        *control.Conn
	spec        connFileSpec
	read, write bool

	mu       sync.Mutex
	text     []byte // status: rendered at open and at each read from 0
	waitSent bool   // wait: the line was read
	closed   bool
}

func (h *connHandle) Kind() Kind {
	if h.spec.stream {
		return Stream
	}
	return Seekable
}

func (h *connHandle) Read(ctx context.Context, p []byte, off int64) (int, error) {
	switch h.spec.file {
	case control.FileCtl:
		return ReadAt([]byte(h.conn.Number()), p, off), nil
	case control.FileStatus:
		h.mu.Lock()
		defer h.mu.Unlock()
		if off == 0 {
			h.text = []byte(h.conn.Status())
		}
		return ReadAt(h.text, p, off), nil
	case control.FileWait:
		h.mu.Lock()
		sent := h.waitSent
		h.mu.Unlock()
		if sent {
			return 0, nil
		}
		line, err := h.conn.Wait(ctx)
		if err != nil {
			return 0, err
		}
		h.mu.Lock()
		h.waitSent = true
		h.mu.Unlock()
		return ReadAt([]byte(line), p, 0), nil
	case control.FileData:
		n, err := h.conn.ReadData(ctx, p)
		if n == 0 && err != nil {
			return 0, err
		}
		return n, nil
	case control.FileStderr:
		n, err := h.conn.ReadStderr(ctx, p)
		if n == 0 && err != nil {
			return 0, err
		}
		return n, nil
	}
	return 0, syscall.EBADF
}

func (h *connHandle) Write(ctx context.Context, p []byte, off int64) (int, error) {
	switch h.spec.file {
	case control.FileCtl:
		if err := h.conn.Ctl(ctx, string(p)); err != nil {
			return 0, err
		}
		return len(p), nil
	case control.FileData:
		n, err := h.conn.WriteData(ctx, p)
		if n == 0 && err != nil {
			return 0, err
		}
		return n, nil
	}
	return 0, syscall.EBADF
}

// Close releases the open with the connection, once.
func (h *connHandle) Close() error {
	h.mu.Lock()
	done := h.closed
	h.closed = true
	h.mu.Unlock()
	if !done {
		h.conn.Release(h.spec.file, h.read, h.write)
	}
	return nil
}
