package vtree

import (
	"context"
	"hash/fnv"
	"syscall"
	"time"

	"github.com/memohfs/memohfs/control"
)

// Attr is what a node says about itself: what ls -l shows.
type Attr struct {
	Mode       uint32 // file type and permission bits (syscall.S_IFDIR|0o700)
	Uid, Gid   uint32
	Size       uint64
	Nlink      uint32
	Ino        uint64 // 0: the face picks one
	Mtime      time.Time
	Atime      time.Time // zero: Mtime
	Ctime      time.Time // zero: Mtime
	Blocks     uint64
	Rdev       uint64
	Blksize    uint32
	Generation uint64
}

// IsDir reports whether the node is a directory.
func (a Attr) IsDir() bool { return a.Mode&syscall.S_IFMT == syscall.S_IFDIR }

// Node is anything in the tree.
type Node interface {
	Attr(ctx context.Context) (Attr, error)
}

// Entry is a name in a Dir's listing.
type Entry struct {
	Name string
	Mode uint32 // the type bits
	Ino  uint64
}

// Dir is a directory of synthetic names.
type Dir interface {
	Node
	// Lookup finds name: ENOENT (control.KindNotFound) if there is none.
	Lookup(ctx context.Context, name string) (Node, error)
	// List names the entries, "." and ".." left out.
	List(ctx context.Context) ([]Entry, error)
}

// Mkdirer is a Dir in which mkdir means something (a new bot, a new
// snapshot).
type Mkdirer interface {
	Mkdir(ctx context.Context, name string) error
}

// Rmdirer is a Dir in which rmdir means something (delete a bot, drop a
// snapshot).
type Rmdirer interface {
	Rmdir(ctx context.Context, name string) error
}

// File is a synthetic file: it opens to a Handle.
type File interface {
	Node
	// Open opens the file for flags (O_RDONLY, O_WRONLY or O_RDWR, with
	// O_NONBLOCK honoured by blocking files).
	Open(ctx context.Context, flags int) (Handle, error)
}

// Kind says how a handle's offsets work.
type Kind int

const (
	// Seekable: reads and writes go where the offset says.
	Seekable Kind = iota
	// Stream: the offset means nothing; a read returns what comes next,
	// waiting for it (a pipe, tail -f).
	Stream
)

// Handle is an open file.
type Handle interface {
	Read(ctx context.Context, p []byte, off int64) (int, error)
	Write(ctx context.Context, p []byte, off int64) (int, error)
	// Close ends what Open began; called once.
	Close() error
	Kind() Kind
}

// Fder is a Handle over a host file (log): a face may hand the fd to the
// kernel (FUSE passthrough) instead of reading it itself. The fd stays
// the handle's.
type Fder interface {
	Fd() int
}

// Caller is who makes a request: the FUSE request's process, or a 9P
// connection's peer (SO_PEERCRED).
type Caller struct {
	Uid, Gid uint32
	Pid      uint32 // 0: not known (a remote 9P peer)
}

type callerKey struct{}

// WithCaller gives ctx the caller of the request it serves.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerOf is the caller WithCaller gave ctx; without one, memohfs
// itself (root).
func CallerOf(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// Errno maps an error of the tree (control's kinds, or an errno) to
// the errno a face answers.
func Errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	if e, ok := err.(syscall.Errno); ok {
		return e
	}
	switch control.KindOf(err) {
	case control.KindInvalid:
		return syscall.EINVAL
	case control.KindNotFound:
		return syscall.ENOENT
	case control.KindExists:
		return syscall.EEXIST
	case control.KindBusy:
		return syscall.EBUSY
	case control.KindPermission:
		return syscall.EACCES
	case control.KindInterrupted:
		return syscall.EINTR
	case control.KindAgain:
		return syscall.EAGAIN
	case control.KindBrokenPipe:
		return syscall.EPIPE
	}
	return syscall.EIO
}

// StableIno gives a synthetic node a stable inode number from its
// identity, in [2^62, 2^63): above any host inode number a face mixes.
func StableIno(parts ...string) uint64 {
	h := fnv.New64a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return h.Sum64()&(1<<62-1) | 1<<62
}

// NameMax is NAME_MAX: a longer name is ENAMETOOLONG on every face,
// before any rule of control's is asked.
const NameMax = 255

// TooLong is ENAMETOOLONG for a name longer than NameMax, else nil.
func TooLong(name string) error {
	if len(name) > NameMax {
		return syscall.ENAMETOOLONG
	}
	return nil
}

// ReadAt copies content from off into p, as a read of a file holding
// content does.
func ReadAt(content, p []byte, off int64) int {
	if off >= int64(len(content)) || off < 0 {
		return 0
	}
	return copy(p, content[off:])
}

// The attributes of the synthetic files and dirs (everything but the
// host trees), as `ls -l` shows them: one link for a file, 2 plus its
// subdirs for a dir (what find and rsync expect of a dir's link count),
// the owner, and a time that means something. A file's three times are
// the same: nothing tracks reads.
//
//	$ ls -l /M/b1
//	drwx------ 6 alice root 0 Dec  4 10:00 cmd      (the bot was made)
//	-rw------- 1 alice root 211 Dec  4 10:00 ctl    (the bot was made)
//	-r--r--r-- 1 alice root 0 Dec  4 10:04 err      (err last changed)
//	-r--r--r-- 1 alice root 0 Dec  4 10:04 events   (the last event)
//	-r--r--r-- 1 alice root 301 Dec  4 10:04 status (the state last changed)
func fileAttr(perm, owner uint32, size int, t time.Time) Attr {
	return Attr{Mode: syscall.S_IFREG | perm, Uid: owner, Nlink: 1, Size: uint64(size), Mtime: t}
}

func dirAttr(perm, owner uint32, subdirs int, t time.Time) Attr {
	return Attr{Mode: syscall.S_IFDIR | perm, Uid: owner, Nlink: uint32(2 + subdirs), Mtime: t}
}

// readOnly is the Write of handles that refuse writes.
type readOnly struct{}

func (readOnly) Write(context.Context, []byte, int64) (int, error) { return 0, syscall.EBADF }
