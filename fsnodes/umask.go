package fsnodes

import (
	"sync/atomic"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// The caller's umask, applied once.
//
// memohfs asks the kernel for FUSE_DONT_MASK: the kernel then sends the
// mode a program asked for and the caller's umask apart, and the host
// kernel applies the umask when memohfs makes the file with the caller's
// credentials (see internal/creds), skipping it where the directory has
// a default ACL, exactly as on a local disk. Without it the kernel
// would strip the umask and the host would strip the daemon's own again
// (`umask 0; touch f` gave 0644).
//
// go-fuse's node API passes the mode but not the umask, so umaskFS
// carries it to the node in bits of the mode no file type uses: bit 31
// says it is there, bits 16-24 hold it. modeAndUmask takes them apart.

const (
	umaskFlag  = 1 << 31
	umaskShift = 16
)

// umaskFS is the raw file system with the umask folded into the mode of
// the requests that create.
type umaskFS struct {
	fuse.RawFileSystem
	// dontMask is set once the kernel agreed to FUSE_DONT_MASK: the modes
	// it sends are unmasked. Before (or without) it, they are masked
	// already and the umask is not applied again.
	dontMask atomic.Bool
}

func (u *umaskFS) fold(mode, umask uint32) uint32 {
	if !u.dontMask.Load() {
		umask = 0
	}
	return mode | umaskFlag | (umask&0o777)<<umaskShift
}

func (u *umaskFS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	in.Mode = u.fold(in.Mode, in.Umask)
	return u.RawFileSystem.Create(cancel, in, name, out)
}

func (u *umaskFS) Tmpfile(cancel <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	in.Mode = u.fold(in.Mode, in.Umask)
	return u.RawFileSystem.Tmpfile(cancel, in, out)
}

func (u *umaskFS) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	in.Mode = u.fold(in.Mode, in.Umask)
	return u.RawFileSystem.Mkdir(cancel, in, name, out)
}

func (u *umaskFS) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	in.Mode = u.fold(in.Mode, in.Umask)
	return u.RawFileSystem.Mknod(cancel, in, name, out)
}

// modeAndUmask takes a mode the node API got apart into the mode asked
// for and the umask to apply (0 when none came with it).
func modeAndUmask(mode uint32) (uint32, uint32) {
	if mode&umaskFlag == 0 {
		return mode, 0
	}
	return mode & 0o177777, (mode >> umaskShift) & 0o777
}
