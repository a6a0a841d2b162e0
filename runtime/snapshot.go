package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/rootfs"
	"github.com/containerd/errdefs"
	"github.com/memohfs/memohfs/internal/treesync"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Snapshot takes a live snapshot of the bot's rootfs under the bot's key
// for name, on a new snapshot of the same parent as the container's active
// rootfs; the active snapshot is never committed or moved.
//
// With an overlay snapshotter the active upper dir is copied straight into
// the new snapshot's upper dir: once while the bot runs, then again (only
// what changed since) with the bot frozen; opts.Sync runs beside each
// pass. Other snapshotters take a diff of the whole rootfs while frozen and
// apply it after resuming.
func (c *Containerd) Snapshot(ctx context.Context, bot, name string, opts SnapshotOptions) (_ SnapshotInfo, err error) {
	defer native(&err)
	if err := checkSnapshot(name); err != nil {
		return SnapshotInfo{}, err
	}
	ctx = c.ns(ctx)
	ctr, info, err := c.loadInfo(ctx, bot)
	if err != nil {
		return SnapshotInfo{}, err
	}
	sn := c.client.SnapshotService(info.Snapshotter)
	key := snapKey(bot, name)
	if _, err := sn.Stat(ctx, key); err == nil {
		return SnapshotInfo{}, fmt.Errorf("snapshot %q of bot %q: %w", name, bot, errdefs.ErrAlreadyExists)
	} else if !errdefs.IsNotFound(err) {
		return SnapshotInfo{}, err
	}
	active, err := sn.Stat(ctx, info.SnapshotKey)
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("rootfs %s of bot %q: %w", info.SnapshotKey, bot, err)
	}

	// The lease holds the diff blob and the half-made snapshot until the
	// commit labels it as a GC root.
	ctx, done, err := c.client.WithLease(ctx, leases.WithExpiration(time.Hour))
	if err != nil {
		return SnapshotInfo{}, err
	}
	defer done(context.WithoutCancel(ctx))

	tmp := applyKey(bot, generation())
	mounts, err := sn.Prepare(ctx, tmp, active.Parent, snapshots.WithLabels(map[string]string{LabelBot: bot}))
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("prepare snapshot %q: %w", name, err)
	}
	committed := false
	defer func() {
		if !committed {
			rctx, cancel := detach(ctx)
			defer cancel()
			if err := sn.Remove(rctx, tmp); err != nil && !errdefs.IsNotFound(err) {
				slog.WarnContext(ctx, "remove unfinished snapshot", "key", tmp, "err", err)
			}
		}
	}()
	activeMounts, err := sn.Mounts(ctx, info.SnapshotKey)
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("rootfs %s of bot %q: %w", info.SnapshotKey, bot, err)
	}
	var paused time.Duration
	if from, to := upperDir(activeMounts), upperDir(mounts); from != "" && to != "" {
		paused, err = c.copyUpper(ctx, bot, ctr, from, to, opts.Sync)
	} else {
		paused, err = c.diffApply(ctx, bot, ctr, info.SnapshotKey, sn, mounts, opts.Sync)
	}
	if err != nil {
		return SnapshotInfo{}, err
	}

	now := time.Now().UTC()
	labels := map[string]string{}
	for k, v := range opts.Labels {
		labels[k] = v
	}
	labels[labelGCRoot] = now.Format(time.RFC3339Nano)
	labels[LabelBot] = bot
	labels[LabelSnapshot] = name
	labels[LabelCreated] = now.Format(time.RFC3339Nano)
	if err := sn.Commit(ctx, key, tmp, snapshots.WithLabels(labels)); err != nil {
		if errdefs.IsAlreadyExists(err) {
			return SnapshotInfo{}, fmt.Errorf("snapshot %q of bot %q: %w", name, bot, errdefs.ErrAlreadyExists)
		}
		return SnapshotInfo{}, fmt.Errorf("commit snapshot %q: %w", name, err)
	}
	committed = true
	var lineage []string
	for p := active.Parent; p != "" && len(lineage) < 1000; {
		lineage = append(lineage, p)
		info, err := sn.Stat(ctx, p)
		if err != nil {
			break
		}
		p = info.Parent
	}
	return SnapshotInfo{
		Name: name, Key: key, Parent: active.Parent, Kind: kindName(snapshots.KindCommitted),
		Created: now, Labels: labels, Role: "snapshot", Lineage: lineage, Paused: paused,
	}, nil
}

// upperDir is the directory holding a snapshot's own changes: an overlay
// mount's upperdir, or the source of a bind mount (a snapshot with no
// parent). "" when the mounts are of another kind.
func upperDir(mounts []mount.Mount) string {
	if len(mounts) != 1 {
		return ""
	}
	m := mounts[0]
	switch m.Type {
	case "overlay":
		for _, o := range m.Options {
			if dir, ok := strings.CutPrefix(o, "upperdir="); ok {
				return dir
			}
		}
	case "bind":
		return m.Source
	}
	return ""
}

// copyUpper copies the active rootfs's upper dir into the new snapshot's:
// one or two passes while the bot runs, then a last pass with it frozen,
// which copies only what changed meanwhile. sync runs beside every pass.
func (c *Containerd) copyUpper(ctx context.Context, bot string, ctr containerd.Container, from, to string,
	sync func(context.Context, bool) error) (time.Duration, error) {
	tree := treesync.New(from, to, treesync.Options{Special: true, Xattr: func(string) bool { return true }})
	step := func(final bool) error {
		if _, err := tree.Pass(); err != nil {
			return fmt.Errorf("copy rootfs of bot %q: %w", bot, err)
		}
		if sync != nil {
			return sync(ctx, final)
		}
		return nil
	}
	// While it runs: a second pass when the first was long enough for
	// much to change meanwhile.
	for i := 0; i < 2; i++ {
		start := time.Now()
		if err := step(false); err != nil {
			return 0, err
		}
		if time.Since(start) < 50*time.Millisecond {
			break
		}
	}
	return c.frozen(ctx, bot, ctr, func() error { return step(true) })
}

// diffApply is the path for snapshotters without an upper dir: diff the
// whole rootfs while frozen, apply it to the new snapshot after.
func (c *Containerd) diffApply(ctx context.Context, bot string, ctr containerd.Container, activeKey string,
	sn snapshots.Snapshotter, mounts []mount.Mount, sync func(context.Context, bool) error) (time.Duration, error) {
	if sync != nil {
		if err := sync(ctx, false); err != nil {
			return 0, err
		}
	}
	var desc ocispec.Descriptor
	paused, err := c.frozen(ctx, bot, ctr, func() error {
		var err error
		desc, err = rootfs.CreateDiff(ctx, activeKey, sn, c.client.DiffService(),
			diff.WithMediaType(ocispec.MediaTypeImageLayer))
		if err != nil {
			return fmt.Errorf("diff rootfs of bot %q: %w", bot, err)
		}
		if sync != nil {
			return sync(ctx, true)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if _, err := c.client.DiffService().Apply(ctx, desc, mounts); err != nil {
		return 0, fmt.Errorf("apply rootfs diff of bot %q: %w", bot, err)
	}
	return paused, nil
}

// frozen runs fn with the bot's running task frozen, and thaws it whatever
// happens; it returns how long the task was frozen (0 when it was not
// running).
func (c *Containerd) frozen(ctx context.Context, bot string, ctr containerd.Container, fn func() error) (paused time.Duration, err error) {
	task, err := ctr.Task(ctx, nil)
	if err != nil && !errdefs.IsNotFound(err) {
		return 0, err
	}
	if task == nil {
		return 0, fn()
	}
	st, err := task.Status(ctx)
	if err != nil {
		return 0, err
	}
	if st.Status != containerd.Running {
		return 0, fn()
	}
	start := time.Now()
	thaw, err := c.freeze(ctx, ctr, task)
	if err != nil {
		return 0, fmt.Errorf("freeze bot %q: %w", bot, err)
	}
	defer func() {
		rctx, cancel := detach(ctx)
		defer cancel()
		if terr := thaw(rctx); terr != nil {
			err = errors.Join(err, fmt.Errorf("thaw bot %q: %w", bot, terr))
		}
		paused = time.Since(start)
	}()
	return 0, fn()
}

// RemoveLeftovers removes the bot's snapshots that are neither its rootfs,
// nor a named snapshot, nor a view of one: what a crash in the middle of a
// snapshot or a restore leaves. Run it with no operation on the bot in
// flight. It returns the keys removed.
func (c *Containerd) RemoveLeftovers(ctx context.Context, bot string) (_ []string, err error) {
	defer native(&err)
	list, err := c.Snapshots(ctx, bot)
	if err != nil {
		return nil, err
	}
	ctx = c.ns(ctx)
	snapshotter := c.cfg.Snapshotter
	if _, info, err := c.loadInfo(ctx, bot); err == nil {
		snapshotter = info.Snapshotter
	}
	sn := c.client.SnapshotService(snapshotter)
	var removed []string
	for _, s := range list {
		if s.Role != "leftover" || s.Kind != kindName(snapshots.KindActive) {
			continue
		}
		if err := sn.Remove(ctx, s.Key); err != nil && !errdefs.IsNotFound(err) {
			return removed, fmt.Errorf("remove leftover snapshot %s: %w", s.Key, err)
		}
		removed = append(removed, s.Key)
	}
	return removed, nil
}

// Snapshots lists the bot's named snapshots, its rootfs and the image
// layers under them, each with its parent chain, oldest first.
func (c *Containerd) Snapshots(ctx context.Context, bot string) (_ []SnapshotInfo, err error) {
	defer native(&err)
	if err := checkBot(bot); err != nil {
		return nil, err
	}
	ctx = c.ns(ctx)
	snapshotter, rootfsKey := c.cfg.Snapshotter, ""
	if ctr, err := c.load(ctx, bot); err == nil {
		info, err := ctr.Info(ctx)
		if err != nil {
			return nil, err
		}
		snapshotter, rootfsKey = info.Snapshotter, info.SnapshotKey
	} else if !errdefs.IsNotFound(err) {
		return nil, err
	}
	sn := c.client.SnapshotService(snapshotter)
	all := map[string]snapshots.Info{}
	err = sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		all[info.Name] = info
		return nil
	}, `labels."`+LabelBot+`"==`+strconv.Quote(bot))
	if err != nil {
		return nil, fmt.Errorf("list snapshots of bot %q: %w", bot, err)
	}
	// Follow parents out of the bot's own snapshots (into image layers).
	lineage := func(key string) ([]string, error) {
		var chain []string
		seen := map[string]bool{key: true}
		for p := all[key].Parent; p != ""; p = all[p].Parent {
			if seen[p] {
				return chain, fmt.Errorf("snapshot chain of %s loops at %s: %w", key, p, errdefs.ErrDataLoss)
			}
			seen[p] = true
			if _, ok := all[p]; !ok {
				info, err := sn.Stat(ctx, p)
				if err != nil {
					return chain, fmt.Errorf("parent %s of %s: %w", p, key, err)
				}
				all[p] = info
			}
			chain = append(chain, p)
		}
		return chain, nil
	}
	roles := map[string]string{}
	for key, info := range all {
		switch {
		case key == rootfsKey:
			roles[key] = "rootfs"
		case info.Kind == snapshots.KindCommitted && snapNameOf(bot, key) != "":
			roles[key] = "snapshot"
		}
	}
	// The bot's other snapshots: a half-made snapshot or an old rootfs a
	// crash left behind.
	for key, info := range all {
		if _, ok := roles[key]; !ok && info.Labels[LabelBot] == bot {
			roles[key] = "leftover"
			if strings.HasPrefix(key, viewKey(bot, "")) {
				roles[key] = "view"
			}
		}
	}
	chains := map[string][]string{}
	for _, key := range slices.Sorted(maps.Keys(roles)) {
		chain, err := lineage(key)
		if err != nil {
			return nil, err
		}
		chains[key] = chain
		for i, p := range chain {
			if r, ok := roles[p]; (!ok || r == "leftover") && all[p].Labels[LabelBot] != bot {
				roles[p] = "image"
				chains[p] = chain[i+1:]
			}
		}
	}
	out := make([]SnapshotInfo, 0, len(roles))
	for key, role := range roles {
		info := all[key]
		out = append(out, SnapshotInfo{
			Name: snapNameOf(bot, key), Key: key, Parent: info.Parent, Kind: kindName(info.Kind),
			Created: info.Created, Labels: info.Labels, Role: role, Lineage: chains[key],
		})
	}
	// Image layers first, base up; then the bot's own by creation time.
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if (a.Role == "image") != (b.Role == "image") {
			return a.Role == "image"
		}
		if a.Role == "image" && len(a.Lineage) != len(b.Lineage) {
			return len(a.Lineage) < len(b.Lineage)
		}
		if !a.Created.Equal(b.Created) {
			return a.Created.Before(b.Created)
		}
		return a.Key < b.Key
	})
	return out, nil
}

// RemoveSnapshot drops the bot's snapshot name.
func (c *Containerd) RemoveSnapshot(ctx context.Context, bot, name string) (err error) {
	defer native(&err)
	if err := checkBot(bot); err != nil {
		return err
	}
	if err := checkSnapshot(name); err != nil {
		return err
	}
	ctx = c.ns(ctx)
	// The view goes and the snapshot after it with c.views held: a view
	// asked for meanwhile (MountSnapshot) finds no snapshot, rather than
	// a child that keeps it.
	c.views.Lock()
	defer c.views.Unlock()
	sn := c.client.SnapshotService(c.cfg.Snapshotter)
	key := snapKey(bot, name)
	if _, err := sn.Stat(ctx, key); err != nil {
		return fmt.Errorf("snapshot %q of bot %q: %w", name, bot, err)
	}
	if err := c.unmountSnapshot(ctx, bot, name); err != nil {
		return err
	}
	var children []string
	err = sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		children = append(children, info.Name)
		return nil
	}, `parent==`+strconv.Quote(key))
	if err != nil {
		return err
	}
	if len(children) > 0 {
		return fmt.Errorf("snapshot %q of bot %q is the base of %v: %w", name, bot, children, errdefs.ErrFailedPrecondition)
	}
	if err := sn.Remove(ctx, key); err != nil {
		return fmt.Errorf("remove snapshot %q of bot %q: %w", name, bot, err)
	}
	return nil
}

// Restore gives the bot's (stopped) container a fresh rootfs made from the
// named snapshot. The old rootfs is removed only after the container points
// at the new one, so the container is never without a rootfs.
func (c *Containerd) Restore(ctx context.Context, bot, name string) (_ ContainerInfo, err error) {
	defer native(&err)
	if err := checkSnapshot(name); err != nil {
		return ContainerInfo{}, err
	}
	ctx = c.ns(ctx)
	ctr, info, err := c.loadInfo(ctx, bot)
	if err != nil {
		return ContainerInfo{}, err
	}
	sn := c.client.SnapshotService(info.Snapshotter)
	from := snapKey(bot, name)
	if _, err := sn.Stat(ctx, from); err != nil {
		return ContainerInfo{}, fmt.Errorf("snapshot %q of bot %q: %w", name, bot, err)
	}
	if task, err := ctr.Task(ctx, nil); err == nil {
		st, err := task.Status(ctx)
		if err != nil {
			return ContainerInfo{}, err
		}
		if st.Status != containerd.Stopped && st.Status != containerd.Created {
			return ContainerInfo{}, fmt.Errorf("bot %q is %s: stop it before restoring: %w", bot, st.Status, errdefs.ErrFailedPrecondition)
		}
		if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return ContainerInfo{}, err
		}
	} else if !errdefs.IsNotFound(err) {
		return ContainerInfo{}, err
	}
	ctx, done, err := c.client.WithLease(ctx)
	if err != nil {
		return ContainerInfo{}, err
	}
	defer done(context.WithoutCancel(ctx))
	newKey := activeKey(bot, generation())
	if _, err := sn.Prepare(ctx, newKey, from, snapshots.WithLabels(rootfsLabels(bot))); err != nil {
		return ContainerInfo{}, fmt.Errorf("prepare rootfs from snapshot %q: %w", name, err)
	}
	if err := ctr.Update(ctx, func(_ context.Context, _ *containerd.Client, r *containers.Container) error {
		r.SnapshotKey = newKey
		return nil
	}); err != nil {
		rctx, cancel := detach(ctx)
		defer cancel()
		_ = sn.Remove(rctx, newKey)
		return ContainerInfo{}, fmt.Errorf("point bot %q at the restored rootfs: %w", bot, err)
	}
	if old := info.SnapshotKey; old != "" && old != newKey {
		if err := sn.Remove(ctx, old); err != nil && !errdefs.IsNotFound(err) {
			// The container is restored; the old rootfs stays labelled
			// with the bot and goes when the bot is deleted.
			slog.WarnContext(ctx, "remove replaced rootfs", "bot", bot, "key", old, "err", err)
		}
	}
	info, err = ctr.Info(ctx)
	if err != nil {
		return ContainerInfo{}, err
	}
	return containerInfo(info), nil
}

func kindName(k snapshots.Kind) string { return strings.ToLower(k.String()) }
