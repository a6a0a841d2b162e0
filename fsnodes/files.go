package fsnodes

import (
	"context"
	"errors"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/memohfs/memohfs/control"
	"golang.org/x/sys/unix"
)

// ctlFile is /M/<bot>/ctl. A write runs its verbs (one per line) and
// returns when they are done, or fails with the errno of the first that
// failed; the reason is then in err. Reading gives the verb list. Opens
// with O_TRUNC (`echo start > ctl`) are fine.
type ctlFile struct {
	fs.Inode
	b *botDir
}

var _ fs.NodeGetattrer = (*ctlFile)(nil)

// Getattr: the size is that of what a read gives (the verb list).
func (f *ctlFile) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	synthFile(&out.Attr, 0o600, f.b.owner, len(control.Help()), f.b.times(ctx).Created)
	out.SetTimeout(uncached)
	return 0
}

var _ fs.NodeSetattrer = (*ctlFile)(nil)

// Setattr accepts truncation (O_TRUNC) and nothing else changes.
func (f *ctlFile) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return f.Getattr(ctx, fh, out)
}

var _ fs.NodeOpener = (*ctlFile)(nil)

func (f *ctlFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return nil, fuse.FOPEN_DIRECT_IO, 0
}

var _ fs.NodeReader = (*ctlFile)(nil)

func (f *ctlFile) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return readAt([]byte(control.Help()), dest, off), 0
}

var _ fs.NodeWriter = (*ctlFile)(nil)

func (f *ctlFile) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if err := f.b.r.c.Ctl(ctx, f.b.name, string(data)); err != nil {
		return 0, errnoOf(err)
	}
	return uint32(len(data)), 0
}

func readAt(content, dest []byte, off int64) fuse.ReadResult {
	if off >= int64(len(content)) {
		return fuse.ReadResultData(nil)
	}
	end := off + int64(len(dest))
	if end > int64(len(content)) {
		end = int64(len(content))
	}
	return fuse.ReadResultData(content[off:end])
}

// textFile is a small read-only synthetic file (status, err, info): its
// content is rendered at open (and again at a read from offset 0), served
// with direct I/O, and its size is honest. mtime, if set, says when the
// content last changed.
type textFile struct {
	fs.Inode
	owner  uint32
	render func(ctx context.Context) ([]byte, error)
	mtime  func(ctx context.Context) time.Time
}

type textHandle struct {
	mu      sync.Mutex
	content []byte
}

var _ fs.NodeGetattrer = (*textFile)(nil)

func (f *textFile) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	b, err := f.render(ctx)
	if err != nil {
		return errnoOf(err)
	}
	var t time.Time
	if f.mtime != nil {
		t = f.mtime(ctx)
	}
	synthFile(&out.Attr, 0o444, f.owner, len(b), t)
	out.SetTimeout(uncached)
	return 0
}

var _ fs.NodeOpener = (*textFile)(nil)

func (f *textFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&unix.O_ACCMODE != unix.O_RDONLY {
		return nil, 0, syscall.EACCES
	}
	b, err := f.render(ctx)
	if err != nil {
		return nil, 0, errnoOf(err)
	}
	return &textHandle{content: b}, fuse.FOPEN_DIRECT_IO, 0
}

var _ fs.NodeReader = (*textFile)(nil)

func (f *textFile) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h, ok := fh.(*textHandle)
	if !ok {
		return nil, syscall.EBADF
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if off == 0 {
		// Reading from the start again rearms the file (as sysfs does).
		b, err := f.render(ctx)
		if err != nil {
			return nil, errnoOf(err)
		}
		h.content = b
	}
	return readAt(h.content, dest, off), 0
}

// eventsFile is /M/<bot>/events: one line per lifecycle event. A read from
// the start returns the history; a reader at the end waits for the next
// event, so `cat events` follows like `tail -f` (a reader that opened
// with O_NONBLOCK gets end-of-file instead).
type eventsFile struct {
	fs.Inode
	b *botDir
}

type eventsHandle struct {
	mu       sync.Mutex
	buf      []byte
	last     int64
	nonblock bool
	loaded   bool
}

var _ fs.NodeGetattrer = (*eventsFile)(nil)

// Getattr: the mtime is the last event's; the size is 0, as /proc's
// files have (the history is in Postgres, and a read gives it).
func (f *eventsFile) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	synthFile(&out.Attr, 0o444, f.b.owner, 0, f.b.times(ctx).LastEvent)
	out.SetTimeout(uncached)
	return 0
}

var _ fs.NodeOpener = (*eventsFile)(nil)

func (f *eventsFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&unix.O_ACCMODE != unix.O_RDONLY {
		return nil, 0, syscall.EACCES
	}
	return &eventsHandle{nonblock: flags&unix.O_NONBLOCK != 0}, fuse.FOPEN_DIRECT_IO, 0
}

var _ fs.NodeReader = (*eventsFile)(nil)

func (f *eventsFile) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h, ok := fh.(*eventsHandle)
	if !ok {
		return nil, syscall.EBADF
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	// The wait ends with the reader (interrupt) or with the mount.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(f.b.r.life, cancel)()
	for off >= int64(len(h.buf)) {
		wait := h.loaded && !h.nonblock
		evs, err := f.b.r.c.Events(ctx, f.b.name, h.last, wait)
		if err != nil {
			if control.KindOf(err) == control.KindNotFound || f.b.r.life.Err() != nil {
				return fuse.ReadResultData(nil), 0 // the bot or the mount is gone: end of file
			}
			return nil, errnoOf(err)
		}
		h.loaded = true
		for _, e := range evs {
			h.buf = append(h.buf, e.String()...)
			h.last = e.ID
		}
		if len(evs) == 0 && !wait {
			if h.nonblock || off < int64(len(h.buf)) {
				break
			}
		}
	}
	return readAt(h.buf, dest, off), 0
}

// logFile is /M/<bot>/log: the host file the runtime appends the bot's
// stdout and stderr to, read-only, with its real (growing) size.
type logFile struct {
	fs.Inode
	b *botDir
}

func (f *logFile) path() string { return f.b.r.c.LogPath(f.b.name) }

var _ fs.NodeGetattrer = (*logFile)(nil)

func (f *logFile) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	var st syscall.Stat_t
	if err := syscall.Lstat(f.path(), &st); err == nil {
		out.FromStat(&st)
	} else {
		synthFile(&out.Attr, 0o444, f.b.owner, 0, f.b.times(ctx).Created) // no output yet
	}
	out.Mode = syscall.S_IFREG | 0o444
	out.Uid, out.Gid = f.b.owner, 0
	out.SetTimeout(uncached)
	return 0
}

var _ fs.NodeOpener = (*logFile)(nil)

func (f *logFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&unix.O_ACCMODE != unix.O_RDONLY {
		return nil, 0, syscall.EACCES
	}
	// The log is the runtime's own file (not the bot's); it may not exist
	// before the first start.
	fd, err := unix.Open(f.path(), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_CREAT, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, 0, syscall.ENOENT
		}
		return nil, 0, fs.ToErrno(err)
	}
	return newDataFile(fd), 0, 0
}
