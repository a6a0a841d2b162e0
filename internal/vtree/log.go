package vtree

import (
	"context"
	"errors"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// LogFile is <bot>/log: the host file the runtime appends the bot's
// stdout and stderr to, read-only, with its real (growing) size. It is
// the runtime's own file, not the bot's.
type LogFile struct{ b *Bot }

func (f *LogFile) path() string { return f.b.r.c.LogPath(f.b.Name) }

func (f *LogFile) Attr(ctx context.Context) (Attr, error) {
	var st unix.Stat_t
	if err := unix.Lstat(f.path(), &st); err != nil {
		return fileAttr(0o444, f.b.Owner, 0, f.b.times(ctx).Created), nil // no output yet
	}
	return Attr{
		Mode: syscall.S_IFREG | 0o444, Uid: f.b.Owner, Nlink: 1, Size: uint64(st.Size),
		Blocks: uint64(st.Blocks), Blksize: uint32(st.Blksize), Ino: st.Ino,
		Mtime: time.Unix(st.Mtim.Unix()), Atime: time.Unix(st.Atim.Unix()), Ctime: time.Unix(st.Ctim.Unix()),
	}, nil
}

// Open opens the log (made empty if the bot never ran) without following
// a link.
func (f *LogFile) Open(ctx context.Context, flags int) (Handle, error) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return nil, syscall.EACCES
	}
	fd, err := unix.Open(f.path(), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_CREAT, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, syscall.ENOENT
		}
		return nil, err
	}
	return &FdHandle{fd: fd}, nil
}

// FdHandle is a read-only handle over a host fd it owns.
type FdHandle struct {
	readOnly
	fd int
}

// Fd gives the host fd (Fder): a face may pass the file to its kernel.
func (h *FdHandle) Fd() int { return h.fd }

// TakeFd hands the fd over to the caller: Close then closes nothing.
func (h *FdHandle) TakeFd() int { fd := h.fd; h.fd = -1; return fd }

func (h *FdHandle) Read(ctx context.Context, p []byte, off int64) (int, error) {
	n, err := unix.Pread(h.fd, p, off)
	if n < 0 {
		n = 0
	}
	return n, err
}

func (h *FdHandle) Close() error {
	if h.fd < 0 {
		return nil
	}
	return unix.Close(h.fd)
}

func (h *FdHandle) Kind() Kind { return Seekable }
