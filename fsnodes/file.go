package fsnodes

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"
)

// dataFile is an open host file of a tree. It is go-fuse's loopback file
// (reads, writes, locks, fsync, and kernel passthrough where the kernel
// allows it) with ioctl refused: an ioctl on a host file runs with root's
// rights (chattr +i, for one).
type dataFile struct {
	*fs.LoopbackFile
}

var _ fs.FileIoctler = (*dataFile)(nil)

func newDataFile(fd int) *dataFile {
	return &dataFile{LoopbackFile: fs.NewLoopbackFile(fd).(*fs.LoopbackFile)}
}

func (f *dataFile) Ioctl(ctx context.Context, cmd uint32, arg uint64, input, output []byte) (int32, syscall.Errno) {
	return 0, syscall.ENOTTY
}

func (f *dataFile) fd() int {
	fd, _ := f.PassthroughFd()
	return fd
}

func (f *dataFile) copyTo(o *dataFile, offIn, offOut, length, flags uint64) (uint32, syscall.Errno) {
	in, out := int64(offIn), int64(offOut)
	n, err := unix.CopyFileRange(f.fd(), &in, o.fd(), &out, int(length), int(flags))
	return uint32(n), fs.ToErrno(err)
}
