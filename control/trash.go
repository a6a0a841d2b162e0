package control

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// The trash (<data root>/trash) keeps what deleted bots leave (their data
// and their snapshots' data), what reconcile moves aside (data without a
// record, copies a crash left), for Options.TrashKeep: older entries are
// removed by a sweep at start and then every TrashKeep/4 (at least a
// second, at most an hour), each removal logged and counted
// (memohfs_trash_removed_total).
//
// An entry's age is its ctime: the moment it was made or moved into the
// trash (a rename sets the moved dir's ctime), not the mtime its data had
// when it was the bot's. Nothing changes an entry after that.

// TrashDir is where the trash of a data root is.
func TrashDir(dataRoot string) string { return filepath.Join(dataRoot, "trash") }

func (c *Controller) sweepTrash(ctx context.Context) {
	every := min(max(c.opts.TrashKeep/4, time.Second), time.Hour)
	for {
		c.removeOldTrash(time.Now())
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// removeOldTrash removes the trash entries older than TrashKeep at now.
// os.RemoveAll works below the entry through fds opened without
// following links (openat O_NOFOLLOW), so a link a bot left in its data
// leads it nowhere.
func (c *Controller) removeOldTrash(now time.Time) {
	dir := TrashDir(c.opts.DataRoot)
	entries, err := os.ReadDir(dir)
	if err != nil {
		c.log.Warn("trash: list", "dir", dir, "err", err)
		return
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		made, err := ctime(p)
		if err != nil {
			continue // gone meanwhile
		}
		age := now.Sub(made)
		if age < c.opts.TrashKeep {
			continue
		}
		err = os.RemoveAll(p)
		c.m.trashRemoved(err)
		if err != nil {
			c.log.Error("trash: remove an old entry (tried again at the next sweep)", "entry", p, "age", age.Round(time.Second), "err", err)
			continue
		}
		c.log.Info("trash: removed an entry older than --trash-keep", "entry", p, "age", age.Round(time.Second), "keep", c.opts.TrashKeep)
	}
}

func ctime(p string) (time.Time, error) {
	var x unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, p, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_CTIME, &x); err != nil {
		return time.Time{}, err
	}
	return time.Unix(x.Ctime.Sec, int64(x.Ctime.Nsec)), nil
}

// TrashUsage is what the trash holds: its entries, their bytes (the
// allocated size of each file once, hard links counted once) and when
// its oldest entry was made.
type TrashUsage struct {
	Entries int
	Bytes   int64
	Oldest  time.Time
}

// MeasureTrash measures the trash of a data root (memohfs check). It reads
// without following links.
func MeasureTrash(dataRoot string) (TrashUsage, error) {
	var u TrashUsage
	dir := TrashDir(dataRoot)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return u, nil
	}
	if err != nil {
		return u, err
	}
	type fileID struct{ dev, ino uint64 }
	seen := map[fileID]bool{}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if made, err := ctime(p); err == nil && (u.Oldest.IsZero() || made.Before(u.Oldest)) {
			u.Oldest = made
		}
		u.Entries++
		err := filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil // gone meanwhile, or unreadable: not counted
			}
			var st unix.Stat_t
			if unix.Lstat(path, &st) != nil {
				return nil
			}
			id := fileID{uint64(st.Dev), st.Ino}
			if st.Nlink > 1 && seen[id] {
				return nil
			}
			seen[id] = true
			u.Bytes += st.Blocks * 512
			return nil
		})
		if err != nil {
			return u, err
		}
	}
	return u, nil
}
