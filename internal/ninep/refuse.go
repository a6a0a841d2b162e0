package ninep

import (
	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
)

// refuse answers what a fid does not do: each fid type embeds it and
// overrides what it serves. Extended attributes and byte-range locks are
// not served over 9P (v9fs then keeps locks local to the client).
type refuse struct{}

func (refuse) SetXattr(string, []byte, p9.XattrFlags) error { return linux.EOPNOTSUPP }
func (refuse) GetXattr(string) ([]byte, error)              { return nil, linux.EOPNOTSUPP }
func (refuse) ListXattrs() ([]string, error)                { return nil, nil }
func (refuse) RemoveXattr(string) error                     { return linux.EOPNOTSUPP }
func (refuse) Lock(int, p9.LockType, p9.LockFlags, uint64, uint64, string) (p9.LockStatus, error) {
	return p9.LockStatusError, linux.ENOSYS
}
func (refuse) FSync() error { return nil }
func (refuse) Create(string, p9.OpenFlags, p9.FileMode, p9.UID, p9.GID) (p9.File, p9.QID, uint32, error) {
	return nil, p9.QID{}, 0, linux.EPERM
}
func (refuse) Mkdir(string, p9.FileMode, p9.UID, p9.GID) (p9.QID, error) {
	return p9.QID{}, linux.EPERM
}
func (refuse) Symlink(string, string, p9.UID, p9.GID) (p9.QID, error) {
	return p9.QID{}, linux.EPERM
}
func (refuse) Link(p9.File, string) error { return linux.EPERM }
func (refuse) Mknod(string, p9.FileMode, uint32, uint32, p9.UID, p9.GID) (p9.QID, error) {
	return p9.QID{}, linux.EPERM
}
func (refuse) Rename(p9.File, string) error           { return linux.EXDEV }
func (refuse) RenameAt(string, p9.File, string) error { return linux.EXDEV }
func (refuse) UnlinkAt(string, uint32) error          { return linux.EPERM }
func (refuse) Readlink() (string, error)              { return "", linux.EINVAL }
func (refuse) Renamed(p9.File, string)                {}
func (refuse) SetAttr(p9.SetAttrMask, p9.SetAttr) error {
	return linux.EPERM
}
func (refuse) StatFS() (p9.FSStat, error) {
	return p9.FSStat{Type: v9fsMagic, BlockSize: 4096, NameLength: 255}, nil
}

// v9fsMagic is V9FS_MAGIC, statfs's f_type of a 9P mount.
const v9fsMagic = 0x01021997
