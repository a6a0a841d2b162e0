package fsnodes

// Written from go-fuse v2.12.1's fuse.RawFileSystem, one method each; a
// method go-fuse adds later passes through uncounted (the embedded
// interface) until it is added here.

import "github.com/hanwen/go-fuse/v2/fuse"

// countFS counts the FUSE requests by opcode (memohfs_fuse_requests_total)
// and passes each on. Only a mount with metrics has it in its chain: an
// atomic add per request, nothing when metrics are off.
type countFS struct {
	fuse.RawFileSystem
	ops *fuseOps
}

const (
	fuseOpLookup = iota
	fuseOpForget
	fuseOpGetattr
	fuseOpSetattr
	fuseOpMknod
	fuseOpMkdir
	fuseOpUnlink
	fuseOpRmdir
	fuseOpRename
	fuseOpLink
	fuseOpSymlink
	fuseOpReadlink
	fuseOpAccess
	fuseOpGetxattr
	fuseOpListxattr
	fuseOpSetxattr
	fuseOpRemovexattr
	fuseOpCreate
	fuseOpTmpfile
	fuseOpOpen
	fuseOpRead
	fuseOpLseek
	fuseOpGetlk
	fuseOpSetlk
	fuseOpSetlkw
	fuseOpRelease
	fuseOpWrite
	fuseOpCopyfilerange
	fuseOpIoctl
	fuseOpFlush
	fuseOpFsync
	fuseOpFallocate
	fuseOpOpendir
	fuseOpReaddir
	fuseOpReaddirplus
	fuseOpReleasedir
	fuseOpFsyncdir
	fuseOpStatfs
	fuseOpStatx
	numFuseOps
)

// fuseOpNames are the opcodes as the kernel names them (FUSE_<NAME>).
var fuseOpNames = [numFuseOps]string{
	fuseOpLookup:        "LOOKUP",
	fuseOpForget:        "FORGET",
	fuseOpGetattr:       "GETATTR",
	fuseOpSetattr:       "SETATTR",
	fuseOpMknod:         "MKNOD",
	fuseOpMkdir:         "MKDIR",
	fuseOpUnlink:        "UNLINK",
	fuseOpRmdir:         "RMDIR",
	fuseOpRename:        "RENAME",
	fuseOpLink:          "LINK",
	fuseOpSymlink:       "SYMLINK",
	fuseOpReadlink:      "READLINK",
	fuseOpAccess:        "ACCESS",
	fuseOpGetxattr:      "GETXATTR",
	fuseOpListxattr:     "LISTXATTR",
	fuseOpSetxattr:      "SETXATTR",
	fuseOpRemovexattr:   "REMOVEXATTR",
	fuseOpCreate:        "CREATE",
	fuseOpTmpfile:       "TMPFILE",
	fuseOpOpen:          "OPEN",
	fuseOpRead:          "READ",
	fuseOpLseek:         "LSEEK",
	fuseOpGetlk:         "GETLK",
	fuseOpSetlk:         "SETLK",
	fuseOpSetlkw:        "SETLKW",
	fuseOpRelease:       "RELEASE",
	fuseOpWrite:         "WRITE",
	fuseOpCopyfilerange: "COPY_FILE_RANGE",
	fuseOpIoctl:         "IOCTL",
	fuseOpFlush:         "FLUSH",
	fuseOpFsync:         "FSYNC",
	fuseOpFallocate:     "FALLOCATE",
	fuseOpOpendir:       "OPENDIR",
	fuseOpReaddir:       "READDIR",
	fuseOpReaddirplus:   "READDIRPLUS",
	fuseOpReleasedir:    "RELEASEDIR",
	fuseOpFsyncdir:      "FSYNCDIR",
	fuseOpStatfs:        "STATFS",
	fuseOpStatx:         "STATX",
}

func (f countFS) Lookup(cancel <-chan struct{}, header *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	f.ops.n[fuseOpLookup].Inc()
	return f.RawFileSystem.Lookup(cancel, header, name, out)
}

func (f countFS) Forget(nodeid, nlookup uint64) {
	f.ops.n[fuseOpForget].Inc()
	f.RawFileSystem.Forget(nodeid, nlookup)
}

func (f countFS) GetAttr(cancel <-chan struct{}, input *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	f.ops.n[fuseOpGetattr].Inc()
	return f.RawFileSystem.GetAttr(cancel, input, out)
}

func (f countFS) SetAttr(cancel <-chan struct{}, input *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	f.ops.n[fuseOpSetattr].Inc()
	return f.RawFileSystem.SetAttr(cancel, input, out)
}

func (f countFS) Mknod(cancel <-chan struct{}, input *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	f.ops.n[fuseOpMknod].Inc()
	return f.RawFileSystem.Mknod(cancel, input, name, out)
}

func (f countFS) Mkdir(cancel <-chan struct{}, input *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	f.ops.n[fuseOpMkdir].Inc()
	return f.RawFileSystem.Mkdir(cancel, input, name, out)
}

func (f countFS) Unlink(cancel <-chan struct{}, header *fuse.InHeader, name string) fuse.Status {
	f.ops.n[fuseOpUnlink].Inc()
	return f.RawFileSystem.Unlink(cancel, header, name)
}

func (f countFS) Rmdir(cancel <-chan struct{}, header *fuse.InHeader, name string) fuse.Status {
	f.ops.n[fuseOpRmdir].Inc()
	return f.RawFileSystem.Rmdir(cancel, header, name)
}

func (f countFS) Rename(cancel <-chan struct{}, input *fuse.RenameIn, oldName string, newName string) fuse.Status {
	f.ops.n[fuseOpRename].Inc()
	return f.RawFileSystem.Rename(cancel, input, oldName, newName)
}

func (f countFS) Link(cancel <-chan struct{}, input *fuse.LinkIn, filename string, out *fuse.EntryOut) fuse.Status {
	f.ops.n[fuseOpLink].Inc()
	return f.RawFileSystem.Link(cancel, input, filename, out)
}

func (f countFS) Symlink(cancel <-chan struct{}, header *fuse.InHeader, pointedTo string, linkName string, out *fuse.EntryOut) fuse.Status {
	f.ops.n[fuseOpSymlink].Inc()
	return f.RawFileSystem.Symlink(cancel, header, pointedTo, linkName, out)
}

func (f countFS) Readlink(cancel <-chan struct{}, header *fuse.InHeader) ([]byte, fuse.Status) {
	f.ops.n[fuseOpReadlink].Inc()
	return f.RawFileSystem.Readlink(cancel, header)
}

func (f countFS) Access(cancel <-chan struct{}, input *fuse.AccessIn) fuse.Status {
	f.ops.n[fuseOpAccess].Inc()
	return f.RawFileSystem.Access(cancel, input)
}

func (f countFS) GetXAttr(cancel <-chan struct{}, header *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	f.ops.n[fuseOpGetxattr].Inc()
	return f.RawFileSystem.GetXAttr(cancel, header, attr, dest)
}

func (f countFS) ListXAttr(cancel <-chan struct{}, header *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	f.ops.n[fuseOpListxattr].Inc()
	return f.RawFileSystem.ListXAttr(cancel, header, dest)
}

func (f countFS) SetXAttr(cancel <-chan struct{}, input *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	f.ops.n[fuseOpSetxattr].Inc()
	return f.RawFileSystem.SetXAttr(cancel, input, attr, data)
}

func (f countFS) RemoveXAttr(cancel <-chan struct{}, header *fuse.InHeader, attr string) fuse.Status {
	f.ops.n[fuseOpRemovexattr].Inc()
	return f.RawFileSystem.RemoveXAttr(cancel, header, attr)
}

func (f countFS) Create(cancel <-chan struct{}, input *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	f.ops.n[fuseOpCreate].Inc()
	return f.RawFileSystem.Create(cancel, input, name, out)
}

func (f countFS) Tmpfile(cancel <-chan struct{}, input *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	f.ops.n[fuseOpTmpfile].Inc()
	return f.RawFileSystem.Tmpfile(cancel, input, out)
}

func (f countFS) Open(cancel <-chan struct{}, input *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	f.ops.n[fuseOpOpen].Inc()
	return f.RawFileSystem.Open(cancel, input, out)
}

func (f countFS) Read(cancel <-chan struct{}, input *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	f.ops.n[fuseOpRead].Inc()
	return f.RawFileSystem.Read(cancel, input, buf)
}

func (f countFS) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	f.ops.n[fuseOpLseek].Inc()
	return f.RawFileSystem.Lseek(cancel, in, out)
}

func (f countFS) GetLk(cancel <-chan struct{}, input *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	f.ops.n[fuseOpGetlk].Inc()
	return f.RawFileSystem.GetLk(cancel, input, out)
}

func (f countFS) SetLk(cancel <-chan struct{}, input *fuse.LkIn) fuse.Status {
	f.ops.n[fuseOpSetlk].Inc()
	return f.RawFileSystem.SetLk(cancel, input)
}

func (f countFS) SetLkw(cancel <-chan struct{}, input *fuse.LkIn) fuse.Status {
	f.ops.n[fuseOpSetlkw].Inc()
	return f.RawFileSystem.SetLkw(cancel, input)
}

func (f countFS) Release(cancel <-chan struct{}, input *fuse.ReleaseIn) {
	f.ops.n[fuseOpRelease].Inc()
	f.RawFileSystem.Release(cancel, input)
}

func (f countFS) Write(cancel <-chan struct{}, input *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	f.ops.n[fuseOpWrite].Inc()
	return f.RawFileSystem.Write(cancel, input, data)
}

func (f countFS) Writev(cancel <-chan struct{}, input *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	f.ops.n[fuseOpWrite].Inc()
	return f.RawFileSystem.Writev(cancel, input, data)
}

func (f countFS) CopyFileRange(cancel <-chan struct{}, input *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	f.ops.n[fuseOpCopyfilerange].Inc()
	return f.RawFileSystem.CopyFileRange(cancel, input)
}

func (f countFS) Ioctl(cancel <-chan struct{}, input *fuse.IoctlIn, inbuf []byte, output *fuse.IoctlOut, outbuf []byte) fuse.Status {
	f.ops.n[fuseOpIoctl].Inc()
	return f.RawFileSystem.Ioctl(cancel, input, inbuf, output, outbuf)
}

func (f countFS) Flush(cancel <-chan struct{}, input *fuse.FlushIn) fuse.Status {
	f.ops.n[fuseOpFlush].Inc()
	return f.RawFileSystem.Flush(cancel, input)
}

func (f countFS) Fsync(cancel <-chan struct{}, input *fuse.FsyncIn) fuse.Status {
	f.ops.n[fuseOpFsync].Inc()
	return f.RawFileSystem.Fsync(cancel, input)
}

func (f countFS) Fallocate(cancel <-chan struct{}, input *fuse.FallocateIn) fuse.Status {
	f.ops.n[fuseOpFallocate].Inc()
	return f.RawFileSystem.Fallocate(cancel, input)
}

func (f countFS) OpenDir(cancel <-chan struct{}, input *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	f.ops.n[fuseOpOpendir].Inc()
	return f.RawFileSystem.OpenDir(cancel, input, out)
}

func (f countFS) ReadDir(cancel <-chan struct{}, input *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	f.ops.n[fuseOpReaddir].Inc()
	return f.RawFileSystem.ReadDir(cancel, input, out)
}

func (f countFS) ReadDirPlus(cancel <-chan struct{}, input *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	f.ops.n[fuseOpReaddirplus].Inc()
	return f.RawFileSystem.ReadDirPlus(cancel, input, out)
}

func (f countFS) ReleaseDir(input *fuse.ReleaseIn) {
	f.ops.n[fuseOpReleasedir].Inc()
	f.RawFileSystem.ReleaseDir(input)
}

func (f countFS) FsyncDir(cancel <-chan struct{}, input *fuse.FsyncIn) fuse.Status {
	f.ops.n[fuseOpFsyncdir].Inc()
	return f.RawFileSystem.FsyncDir(cancel, input)
}

func (f countFS) StatFs(cancel <-chan struct{}, input *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	f.ops.n[fuseOpStatfs].Inc()
	return f.RawFileSystem.StatFs(cancel, input, out)
}

func (f countFS) Statx(cancel <-chan struct{}, input *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	f.ops.n[fuseOpStatx].Inc()
	return f.RawFileSystem.Statx(cancel, input, out)
}
