package fsnodes

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/memohfs/memohfs/internal/hostfs"
	"golang.org/x/sys/unix"
)

// dataFile is an open host file of a tree. It is go-fuse's loopback file
// (reads, writes, locks, fsync, and kernel passthrough where the kernel
// allows it) with ioctl refused: an ioctl on a host file runs with root's
// rights (chattr +i, for one).
type dataFile struct {
	*fs.LoopbackFile
	n        *dataNode // nil for files outside trees (log)
	fd       int
	writable bool
}

// PassthroughFd is the embedded LoopbackFile's: it gives the kernel the
// host file, for passthrough.
var _ fs.FilePassthroughFder = (*dataFile)(nil)

func newDataFile(fd int) *dataFile {
	return &dataFile{LoopbackFile: fs.NewLoopbackFile(fd).(*fs.LoopbackFile), fd: fd}
}

// newFile makes a handle of the node for fd, a file open for I/O.
func (n *dataNode) newFile(fd int) *dataFile {
	f := newDataFile(fd)
	f.n = n
	if fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); err == nil && fl&unix.O_ACCMODE != unix.O_RDONLY {
		f.writable = true
	}
	return f
}

var _ fs.FileReleaser = (*dataFile)(nil)

func (f *dataFile) Release(ctx context.Context) syscall.Errno {
	if f.n != nil {
		if f.writable {
			// What it wrote is the kernel's own doing: the watcher must
			// not drop caches for it.
			var x unix.Statx_t
			if hostfs.Statx(f.fd, "", &x) == nil {
				f.n.t.noteOwn(f.n.t.rel(f.n.EmbeddedInode()), &x)
			}
		}
	}
	return f.LoopbackFile.Release(ctx)
}

var _ fs.FileFlusher = (*dataFile)(nil)

// Flush answers ENOSYS: the kernel then stops sending FLUSH on close (a
// round trip per close saved). There is nothing to flush: writes go to
// the host file as they happen, and locks are the open file's own (OFD)
// and go with its release.
func (f *dataFile) Flush(ctx context.Context) syscall.Errno { return syscall.ENOSYS }

var _ fs.FileIoctler = (*dataFile)(nil)

func (f *dataFile) Ioctl(ctx context.Context, cmd uint32, arg uint64, input, output []byte) (int32, syscall.Errno) {
	return 0, syscall.ENOTTY
}

func (f *dataFile) copyTo(o *dataFile, offIn, offOut, length, flags uint64) (uint32, syscall.Errno) {
	in, out := int64(offIn), int64(offOut)
	n, err := unix.CopyFileRange(f.fd, &in, o.fd, &out, int(length), int(flags))
	return uint32(n), fs.ToErrno(err)
}

var _ fs.NodeCopyFileRanger = (*dataNode)(nil)

func (n *dataNode) CopyFileRange(ctx context.Context, fhIn fs.FileHandle, offIn uint64, out *fs.Inode, fhOut fs.FileHandle,
	offOut uint64, length uint64, flags uint64) (uint32, syscall.Errno) {
	in, ok1 := fhIn.(*dataFile)
	o, ok2 := fhOut.(*dataFile)
	if !ok1 || !ok2 {
		return 0, syscall.EXDEV
	}
	if e := n.writable(); e != 0 {
		return 0, e
	}
	return in.copyTo(o, offIn, offOut, length, flags)
}
