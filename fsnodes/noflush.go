package fsnodes

import "github.com/hanwen/go-fuse/v2/fuse"

// No FLUSH on close.
//
// The kernel sends FLUSH, and waits for its answer, on every close(2)
// of a file on the mount, not just the last one: a close is a round
// trip. memohfs has nothing to do at close. Writes reach the host file
// (or the control file's handler) as they are made, locks are the open
// file's own and go with its release, and there is no writeback cache.
// So every open and create answers FOPEN_NOFLUSH (Linux 5.16) and the
// kernel skips the round trip. dataFile.Flush answering ENOSYS stays as
// the fallback for a kernel that does not know the flag.
//
// It also keeps a process that serves the mount from waiting on itself.
// A child made with vfork closes the parent's close-on-exec files when
// it execs, and the parent thread waits for that. If one of those files
// is on the mount (a test writing to ctl while the write starts a bot,
// whose CNI plugins are exec'd by the same process), the child waits for
// a FLUSH the parent's Go runtime cannot answer while a stop-the-world
// waits for the vforking thread.
type noFlushFS struct {
	fuse.RawFileSystem
}

func (n noFlushFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	st := n.RawFileSystem.Open(cancel, in, out)
	out.OpenFlags |= fuse.FOPEN_NOFLUSH
	return st
}

func (n noFlushFS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	st := n.RawFileSystem.Create(cancel, in, name, out)
	out.OpenFlags |= fuse.FOPEN_NOFLUSH
	return st
}

func (n noFlushFS) Tmpfile(cancel <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	st := n.RawFileSystem.Tmpfile(cancel, in, out)
	out.OpenFlags |= fuse.FOPEN_NOFLUSH
	return st
}
