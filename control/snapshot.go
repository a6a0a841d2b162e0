package control

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/memohfs/memohfs/internal/treesync"
	"github.com/memohfs/memohfs/runtime"
	"github.com/memohfs/memohfs/store"
)

const (
	sourceManual     = store.SourceManual
	sourcePreRestore = store.SourcePreRestore
)

// SnapshotInfo describes one snapshot, as snapshots/<name>/info shows it.
type SnapshotInfo struct {
	Name      string
	Version   int
	Source    string
	Parent    string // the snapshot (or image layer) the rootfs builds on
	Created   time.Time
	RootfsKey string
	DataPath  string
}

// String renders the info file: `key value` lines.
func (s SnapshotInfo) String() string {
	v := func(x string) string {
		if x == "" {
			return "-"
		}
		return x
	}
	return fmt.Sprintf("name %s\nversion %d\nsource %s\nparent %s\ncreated %s\nrootfs %s\n",
		s.Name, s.Version, v(s.Source), v(s.Parent), s.Created.UTC().Format(time.RFC3339), v(s.RootfsKey))
}

// restoreSuffix names the copy of data/ a restore stages beside it.
const restoreSuffix = ".restore-"

// DataXattr says which extended attributes of data/ files memohfs serves
// and snapshots keep: the user.* namespace and POSIX ACLs. trusted.* and
// security.* (file capabilities) of bot files stay out of reach.
func DataXattr(name string) bool {
	return strings.HasPrefix(name, "user.") || name == "system.posix_acl_access" || name == "system.posix_acl_default"
}

// snapshotDataRoot is where a snapshot's copy of data/ lives.
func snapshotDataRoot(snapDir string) string { return filepath.Join(snapDir, "data") }

// Snapshots lists the bot's snapshots, oldest version first.
func (c *Controller) Snapshots(ctx context.Context, name string) ([]SnapshotInfo, error) {
	b, err := c.get(name)
	if err != nil {
		return nil, err
	}
	recs, err := c.st.ListSnapshots(ctx, b.id())
	if err != nil {
		return nil, wrap(err, "snapshots of bot "+name)
	}
	out := make([]SnapshotInfo, 0, len(recs))
	for _, r := range recs {
		out = append(out, snapshotInfo(r, recs))
	}
	return out, nil
}

// DescribeSnapshot describes one snapshot of the bot.
func (c *Controller) DescribeSnapshot(ctx context.Context, name, snap string) (SnapshotInfo, error) {
	b, err := c.get(name)
	if err != nil {
		return SnapshotInfo{}, err
	}
	if !runtime.ValidSnapshotName(snap) {
		return SnapshotInfo{}, errorf(KindNotFound, "snapshot %q: no such snapshot", truncate(snap, 80))
	}
	r, err := c.st.GetSnapshot(ctx, b.id(), snap)
	if err != nil {
		return SnapshotInfo{}, wrap(err, "snapshot "+snap+" of bot "+name)
	}
	return snapshotInfo(r, nil), nil
}

func snapshotInfo(r store.Snapshot, all []store.Snapshot) SnapshotInfo {
	parent := r.Parent
	for _, o := range all {
		if o.RuntimeKey == r.Parent {
			parent = o.Name
		}
	}
	return SnapshotInfo{Name: r.Name, Version: r.Version, Source: r.Source, Parent: parent,
		Created: r.Created, RootfsKey: r.RuntimeKey, DataPath: r.DataPath}
}

// SnapshotData is the directory holding the snapshot's copy of data/.
func (c *Controller) SnapshotData(ctx context.Context, name, snap string) (string, error) {
	info, err := c.DescribeSnapshot(ctx, name, snap)
	if err != nil {
		return "", err
	}
	if info.DataPath == "" {
		return "", errorf(KindNotFound, "snapshot %q of bot %q has no data copy", snap, name)
	}
	return snapshotDataRoot(info.DataPath), nil
}

// SnapshotRootfs mounts (once) a read-only view of the snapshot's rootfs
// and returns its directory.
func (c *Controller) SnapshotRootfs(ctx context.Context, name, snap string) (string, error) {
	if _, err := c.DescribeSnapshot(ctx, name, snap); err != nil {
		return "", err
	}
	dir, err := c.rt.MountSnapshot(ctx, name, snap)
	return dir, wrap(err, "rootfs of snapshot "+snap)
}

// TakeSnapshot takes a snapshot named snap (mkdir snapshots/NAME).
func (c *Controller) TakeSnapshot(ctx context.Context, name, snap string) error {
	return c.operate(ctx, name, "snapshot", nil, func(ctx context.Context, b *bot) error {
		_, err := c.takeSnapshot(ctx, b, snap, sourceManual)
		return err
	})
}

// takeSnapshot takes a live snapshot of the rootfs and data/ at one instant:
// the task is paused while the rootfs diff is taken and the data files
// changed since the previous snapshot are copied (the rest are hard links
// to that snapshot's copy). It is recorded, with its version and event, in
// one transaction; if that fails the snapshot is removed again.
func (c *Controller) takeSnapshot(ctx context.Context, b *bot, snap, source string) (store.Snapshot, error) {
	if snap != "" && !runtime.ValidSnapshotName(snap) {
		return store.Snapshot{}, errorf(KindInvalid, "snapshot name %q: want 1 to 128 of A-Z a-z 0-9 . _ -, starting with a letter or digit", truncate(snap, 80))
	}
	id := b.id()
	if snap == "" {
		v, err := c.st.NextVersion(ctx, id)
		if err != nil {
			return store.Snapshot{}, wrap(err, "snapshot")
		}
		snap = "v" + strconv.Itoa(v)
	}
	if _, err := c.st.GetSnapshot(ctx, id, snap); err == nil {
		return store.Snapshot{}, errorf(KindExists, "snapshot %q of bot %q exists", snap, b.name)
	} else if !store.IsNotFound(err) {
		return store.Snapshot{}, wrap(err, "snapshot "+snap)
	}
	prevRoot, prevManifest := c.previousCopy(ctx, id)

	dir := c.snapshotDir(b.name, snap)
	tmp := filepath.Join(filepath.Dir(dir), ".tmp-"+snap)
	if err := os.RemoveAll(tmp); err != nil {
		return store.Snapshot{}, wrap(err, "snapshot "+snap)
	}
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return store.Snapshot{}, wrap(err, "snapshot "+snap)
	}
	defer os.RemoveAll(tmp)

	prev := b.getState()
	b.setState(store.StateSnapshotting)
	// data/ is copied beside the rootfs: while the bot runs, then what
	// changed since with it frozen. Unchanged files are links to the
	// previous snapshot's copy.
	data := treesync.New(c.DataDir(b.name), snapshotDataRoot(tmp),
		treesync.Options{PrevRoot: prevRoot, Prev: prevManifest, Xattr: DataXattr})
	var stats, frozenStats treesync.Stats
	start := time.Now()
	info, err := c.rt.Snapshot(ctx, b.name, snap, runtime.SnapshotOptions{
		Labels: map[string]string{"memohfs.source": source, "memohfs.data": dir},
		Sync: func(_ context.Context, final bool) error {
			st, err := data.Pass()
			stats.Copied += st.Copied
			stats.Linked += st.Linked
			stats.Bytes += st.Bytes
			stats.Files = st.Files
			if final {
				frozenStats = st
			}
			return err
		},
	})
	c.settle(ctx, b, prev)
	if err != nil {
		return store.Snapshot{}, wrap(err, "snapshot "+snap)
	}
	undo := func() {
		dctx, cancel := detached(ctx)
		defer cancel()
		if err := c.rt.RemoveSnapshot(dctx, b.name, snap); err != nil && !errdefs.IsNotFound(err) {
			c.log.Error("undo an unrecorded snapshot", "bot", b.name, "snapshot", snap, "err", err)
		}
		os.RemoveAll(dir)
	}
	err = data.Manifest().Save(filepath.Join(tmp, "manifest"))
	if err == nil {
		err = os.Rename(tmp, dir)
	}
	if err != nil {
		undo()
		return store.Snapshot{}, wrap(err, "snapshot "+snap+": data copy")
	}
	rec, err := c.st.CreateSnapshot(ctx, id, store.NewSnapshot{
		Name: snap, RuntimeKey: info.Key, Parent: info.Parent, Source: source, DataPath: dir,
		Detail: map[string]any{
			"paused_ms":   float64(info.Paused.Microseconds()) / 1000,
			"data_copied": stats.Copied, "data_linked": stats.Linked, "data_bytes": stats.Bytes,
			"data_copied_frozen": frozenStats.Copied, "data_bytes_frozen": frozenStats.Bytes,
		},
	})
	if err != nil {
		undo()
		return store.Snapshot{}, wrap(err, "snapshot "+snap+" (undone)")
	}
	b.mu.Lock()
	b.rec.Version = rec.Version
	b.rec.Snapshots++
	b.mu.Unlock()
	b.eventsRecorded()
	c.notify(SnapshotsChanged, b.name)
	c.m.snapshot(info.Paused, time.Since(start))
	c.log.Info("snapshot", "bot", b.name, "name", snap, "version", rec.Version, "took", time.Since(start),
		"paused", info.Paused, "files", stats.Files, "copied", stats.Copied, "linked", stats.Linked, "bytes", stats.Bytes,
		"copied_frozen", frozenStats.Copied, "bytes_frozen", frozenStats.Bytes)
	return rec, nil
}

// settle puts a bot back in the state it had before an operation that
// paused it, unless its task ended meanwhile.
func (c *Controller) settle(ctx context.Context, b *bot, prev store.State) {
	if prev != store.StateRunning {
		b.setState(prev)
		return
	}
	ti, err := c.rt.Task(ctx, b.name)
	if err == nil && ti.State != runtime.TaskRunning && ti.State != runtime.TaskPaused {
		// It died while paused or copying: record the exit now.
		c.exitedDuringOp(ctx, b, ti)
		return
	}
	b.setState(store.StateRunning)
}

// previousCopy finds the newest snapshot with a data copy and manifest.
func (c *Controller) previousCopy(ctx context.Context, id string) (string, treesync.Manifest) {
	recs, err := c.st.ListSnapshots(ctx, id)
	if err != nil {
		return "", nil
	}
	for i := len(recs) - 1; i >= 0; i-- {
		if recs[i].DataPath == "" {
			continue
		}
		m, err := treesync.LoadManifest(filepath.Join(recs[i].DataPath, "manifest"))
		if err == nil {
			return snapshotDataRoot(recs[i].DataPath), m
		}
	}
	return "", nil
}

// DropSnapshot drops a snapshot (rmdir snapshots/NAME).
func (c *Controller) DropSnapshot(ctx context.Context, name, snap string) error {
	return c.operate(ctx, name, "drop", func() error {
		if !runtime.ValidSnapshotName(snap) {
			return errorf(KindNotFound, "snapshot %q: no such snapshot", truncate(snap, 80))
		}
		return nil
	}, func(ctx context.Context, b *bot) error {
		return c.dropSnapshot(ctx, b, snap)
	})
}

func (c *Controller) dropSnapshot(ctx context.Context, b *bot, snap string) error {
	rec, err := c.st.GetSnapshot(ctx, b.id(), snap)
	if err != nil {
		return wrap(err, "snapshot "+snap)
	}
	c.tell(Change{Kind: SnapshotDropping, Bot: b.name, Snap: snap})
	defer c.notify(SnapshotsChanged, b.name)
	if err := c.rt.RemoveSnapshot(ctx, b.name, snap); err != nil && !errdefs.IsNotFound(err) {
		return wrap(err, "drop snapshot "+snap)
	}
	if err := c.st.DeleteSnapshot(ctx, b.id(), snap); err != nil {
		return wrap(err, "drop snapshot "+snap+": removed from the runtime, but the record stays; rmdir again")
	}
	if rec.DataPath != "" {
		// Later snapshots hard-link to this copy's files; removing its
		// names leaves theirs.
		if err := os.RemoveAll(rec.DataPath); err != nil {
			c.log.Warn("remove the data copy of a dropped snapshot", "bot", b.name, "snapshot", snap, "err", err)
		}
	}
	b.mu.Lock()
	b.rec.Snapshots--
	b.mu.Unlock()
	b.eventsRecorded()
	return nil
}

// restore puts rootfs and data/ back to snapshot snap: first a
// pre-restore-<version> snapshot of how things are, then (with the bot
// stopped) the rootfs from the snapshot and data/ from its copy; then the
// bot is started again if it ran.
func (c *Controller) restore(ctx context.Context, b *bot, snap string) error {
	if !runtime.ValidSnapshotName(snap) {
		return errorf(KindInvalid, "snapshot name %q is not valid", truncate(snap, 80))
	}
	target, err := c.st.GetSnapshot(ctx, b.id(), snap)
	if err != nil {
		return wrap(err, "snapshot "+snap)
	}
	if target.DataPath == "" {
		return errorf(KindNotFound, "snapshot %q has no data copy to restore", snap)
	}
	v, err := c.st.NextVersion(ctx, b.id())
	if err != nil {
		return wrap(err, "restore")
	}
	if _, err := c.takeSnapshot(ctx, b, "pre-restore-"+strconv.Itoa(v), sourcePreRestore); err != nil {
		return wrap(err, "restore: the pre-restore snapshot failed, nothing was changed")
	}
	// Copy the snapshot's data while the bot still runs.
	live := c.DataDir(b.name)
	staged := live + restoreSuffix + strconv.FormatInt(time.Now().UnixNano(), 36)
	if _, err := treesync.New(snapshotDataRoot(target.DataPath), staged, treesync.Options{Xattr: DataXattr}).Pass(); err != nil {
		os.RemoveAll(staged)
		return wrap(err, "restore: copy the snapshot's data")
	}
	defer os.RemoveAll(staged)

	wasRunning := b.getState() == store.StateRunning
	if err := c.stop(ctx, b, c.opts.StopGrace); err != nil {
		return wrap(err, "restore")
	}
	b.setState(store.StateRestoring)
	info, err := c.rt.Restore(ctx, b.name, snap)
	if err != nil {
		b.setState(store.StateStopped)
		return wrap(err, "restore rootfs")
	}
	if err := c.st.SetRootfs(ctx, b.id(), info.RootfsKey, &store.Event{Type: "restore",
		Payload: map[string]any{"name": snap, "version": target.Version}}); err != nil {
		b.setState(store.StateError)
		return wrap(err, "restore: the rootfs is back to "+snap+" but that could not be recorded")
	}
	b.mu.Lock()
	b.rec.Container.RootfsKey = info.RootfsKey
	b.mu.Unlock()
	c.notify(DataReplacing, b.name)
	if err := swapDirs(staged, live); err != nil {
		c.notify(DataReplaced, b.name)
		b.setState(store.StateError)
		return wrap(err, "restore: the rootfs is back to "+snap+" but data/ could not be swapped in")
	}
	// staged now holds the replaced data; pre-restore-<v> keeps a copy.
	c.notify(DataReplaced, b.name)
	b.setState(store.StateStopped)
	b.eventsRecorded()
	if wasRunning {
		return c.start(ctx, b)
	}
	return nil
}
