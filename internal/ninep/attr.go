package ninep

import (
	"syscall"
	"time"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"github.com/memohfs/memohfs/internal/vtree"
	"golang.org/x/sys/unix"
)

// qidOf is the QID of a node of attributes a.
func qidOf(a vtree.Attr) p9.QID {
	return p9.QID{Type: p9.FileMode(a.Mode).QIDType(), Path: a.Ino, Version: uint32(a.Generation)}
}

// p9Attr turns a tree node's attributes into 9P's.
func p9Attr(a vtree.Attr) p9.Attr {
	at, ct := a.Atime, a.Ctime
	if at.IsZero() {
		at = a.Mtime
	}
	if ct.IsZero() {
		ct = a.Mtime
	}
	out := p9.Attr{
		Mode: p9.FileMode(a.Mode), UID: p9.UID(a.Uid), GID: p9.GID(a.Gid), NLink: p9.NLink(a.Nlink),
		RDev: p9.Dev(a.Rdev), Size: a.Size, BlockSize: uint64(a.Blksize), Blocks: a.Blocks, Gen: a.Generation,
	}
	if out.BlockSize == 0 {
		out.BlockSize = 4096
	}
	out.ATimeSeconds, out.ATimeNanoSeconds = stamp(at)
	out.MTimeSeconds, out.MTimeNanoSeconds = stamp(a.Mtime)
	out.CTimeSeconds, out.CTimeNanoSeconds = stamp(ct)
	return out
}

func stamp(t time.Time) (uint64, uint64) {
	if t.IsZero() {
		return 0, 0
	}
	return uint64(t.Unix()), uint64(t.Nanosecond())
}

// attrOfStatx is a host file's attributes.
func attrOfStatx(x *unix.Statx_t) vtree.Attr {
	ts := func(t unix.StatxTimestamp) time.Time { return time.Unix(t.Sec, int64(t.Nsec)) }
	return vtree.Attr{
		Mode: uint32(x.Mode), Uid: x.Uid, Gid: x.Gid, Size: x.Size, Nlink: x.Nlink, Ino: x.Ino,
		Mtime: ts(x.Mtime), Atime: ts(x.Atime), Ctime: ts(x.Ctime), Blocks: x.Blocks,
		Rdev: unix.Mkdev(x.Rdev_major, x.Rdev_minor), Blksize: x.Blksize,
	}
}

// errOf is the errno a 9P client is answered (Rlerror) for err, as the
// library's own type: given a syscall.Errno, the library would answer
// EPERM as EACCES (it tests errors.Is(err, os.ErrPermission) first).
func errOf(err error) error {
	if err == nil {
		return nil
	}
	return linux.Errno(vtree.Errno(err))
}

// typeOf is a directory entry's QID type from its mode's type bits.
func typeOf(mode uint32) p9.QIDType {
	if mode&syscall.S_IFMT == 0 {
		return p9.TypeRegular
	}
	return p9.FileMode(mode).QIDType()
}

// walkGetAttr is Twalkgetattr for any fid: a walk, then the new fid's
// attributes (the fid is let go if they cannot be had).
func walkGetAttr(f p9.File, names []string) ([]p9.QID, p9.File, p9.AttrMask, p9.Attr, error) {
	qids, nf, err := f.Walk(names)
	if err != nil {
		return nil, nil, p9.AttrMask{}, p9.Attr{}, err
	}
	_, mask, a, err := nf.GetAttr(p9.AttrMaskAll)
	if err != nil {
		nf.Close()
		return nil, nil, p9.AttrMask{}, p9.Attr{}, err
	}
	return qids, nf, mask, a, nil
}
