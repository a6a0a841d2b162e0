package vtree

import (
	"context"
	"syscall"
	"time"
)

// SnapshotsDir is <bot>/snapshots: a dir per snapshot. mkdir takes one,
// rmdir drops one.
//
//	$ mkdir /M/b1/snapshots/before-upgrade
//	$ cat /M/b1/snapshots/before-upgrade/info
type SnapshotsDir struct{ b *Bot }

func (d *SnapshotsDir) Attr(ctx context.Context) (Attr, error) {
	st, err := d.b.r.c.Status(d.b.Name)
	if err != nil {
		return Attr{}, err
	}
	return dirAttr(0o755, d.b.Owner, st.Snapshots, st.Created), nil
}

// Ino is the stable inode number of snapshot name.
func (d *SnapshotsDir) Ino(name string) uint64 { return StableIno("snapshot", d.b.ID, name) }

// Lookup gives the snapshot as it is now (its version moves when a
// snapshot of the same name is taken again).
func (d *SnapshotsDir) Lookup(ctx context.Context, name string) (Node, error) {
	return d.Snapshot(ctx, name)
}

// Snapshot describes snapshot name.
func (d *SnapshotsDir) Snapshot(ctx context.Context, name string) (*SnapDir, error) {
	if err := TooLong(name); err != nil {
		return nil, err
	}
	info, err := d.b.r.c.DescribeSnapshot(ctx, d.b.Name, name)
	if err != nil {
		return nil, err
	}
	return newSnapDir(d, name, info.Version, info.Created), nil
}

func (d *SnapshotsDir) List(ctx context.Context) ([]Entry, error) {
	list, err := d.b.r.c.Snapshots(ctx, d.b.Name)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(list))
	for _, s := range list {
		out = append(out, Entry{Name: s.Name, Mode: syscall.S_IFDIR, Ino: d.Ino(s.Name)})
	}
	return out, nil
}

func (d *SnapshotsDir) Mkdir(ctx context.Context, name string) error {
	if err := TooLong(name); err != nil {
		return err
	}
	return d.b.r.c.TakeSnapshot(ctx, d.b.Name, name)
}

func (d *SnapshotsDir) Rmdir(ctx context.Context, name string) error {
	return d.b.r.c.DropSnapshot(ctx, d.b.Name, name)
}

// SnapDir is snapshots/<s>: info, and the snapshot's data/ and rootfs/,
// read-only.
type SnapDir struct {
	d       *SnapshotsDir
	Name    string
	Version int
	Created time.Time
	entries map[string]Node
}

// SnapEntries are a snapshot dir's names, in listing order.
var SnapEntries = []string{"info", "data", "rootfs"}

func newSnapDir(d *SnapshotsDir, name string, version int, created time.Time) *SnapDir {
	c, bot := d.b.r.c, d.b.Name
	s := &SnapDir{d: d, Name: name, Version: version, Created: created}
	s.entries = map[string]Node{
		"info": &TextFile{Owner: d.b.Owner,
			Mtime: func(context.Context) time.Time { return created },
			Render: func(ctx context.Context) ([]byte, error) {
				info, err := c.DescribeSnapshot(ctx, bot, name)
				return []byte(info.String()), err
			}},
		"data": &Tree{ReadOnly: true, Owner: d.b.Owner,
			Resolve: func(ctx context.Context) (string, error) { return c.SnapshotData(ctx, bot, name) }},
		"rootfs": &Tree{ReadOnly: true, Owner: d.b.Owner,
			Resolve: func(ctx context.Context) (string, error) { return c.SnapshotRootfs(ctx, bot, name) }},
	}
	return s
}

func (s *SnapDir) Attr(ctx context.Context) (Attr, error) {
	a := dirAttr(0o555, s.d.b.Owner, 2, s.Created)
	a.Ino = s.d.Ino(s.Name)
	a.Generation = uint64(s.Version)
	return a, nil
}

func (s *SnapDir) Lookup(ctx context.Context, name string) (Node, error) {
	if n, ok := s.entries[name]; ok {
		return n, nil
	}
	return nil, syscall.ENOENT
}

func (s *SnapDir) List(ctx context.Context) ([]Entry, error) {
	return []Entry{{Name: "info", Mode: syscall.S_IFREG}, {Name: "data", Mode: syscall.S_IFDIR}, {Name: "rootfs", Mode: syscall.S_IFDIR}}, nil
}
