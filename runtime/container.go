package runtime

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"

	"github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/image-spec/identity"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Create makes the bot's container. The rootfs is a fresh active snapshot
// on top of the image (or of one of the bot's snapshots); an existing
// container of the bot is never touched.
func (c *Containerd) Create(ctx context.Context, spec BotSpec) (_ ContainerInfo, err error) {
	defer native(&err)
	if err := checkBot(spec.Bot); err != nil {
		return ContainerInfo{}, err
	}
	if !filepath.IsAbs(spec.DataDir) {
		return ContainerInfo{}, fmt.Errorf("data dir %q must be absolute: %w", spec.DataDir, errdefs.ErrInvalidArgument)
	}
	if fi, err := os.Stat(spec.DataDir); err != nil || !fi.IsDir() {
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			return ContainerInfo{}, fmt.Errorf("data dir %q is not a directory: %w", spec.DataDir, errdefs.ErrNotFound)
		}
		return ContainerInfo{}, fmt.Errorf("data dir: %w", err)
	}
	ctx = c.ns(ctx)
	id := ContainerID(spec.Bot)
	if _, err := c.client.LoadContainer(ctx, id); err == nil {
		return ContainerInfo{}, fmt.Errorf("container of bot %q: %w", spec.Bot, errdefs.ErrAlreadyExists)
	} else if !errdefs.IsNotFound(err) {
		return ContainerInfo{}, fmt.Errorf("container of bot %q: %w", spec.Bot, err)
	}
	img, err := c.client.GetImage(ctx, c.cfg.Image)
	if err != nil {
		return ContainerInfo{}, fmt.Errorf("image %s: %w", c.cfg.Image, err)
	}
	if ok, err := img.IsUnpacked(ctx, c.cfg.Snapshotter); err != nil {
		return ContainerInfo{}, fmt.Errorf("image %s: %w", c.cfg.Image, err)
	} else if !ok {
		return ContainerInfo{}, fmt.Errorf("image %s is not unpacked into %s: %w", c.cfg.Image, c.cfg.Snapshotter, errdefs.ErrFailedPrecondition)
	}

	// The lease keeps the new rootfs from the garbage collector until the
	// container references it.
	ctx, done, err := c.client.WithLease(ctx)
	if err != nil {
		return ContainerInfo{}, err
	}
	defer done(context.WithoutCancel(ctx))

	sn := c.client.SnapshotService(c.cfg.Snapshotter)
	key, reattached, err := c.reattachRootfs(ctx, spec)
	if err != nil {
		return ContainerInfo{}, err
	}
	var parent string
	if reattached {
		// The rootfs the bot had survived its container: keep it.
	} else if spec.FromSnapshot != "" {
		if err := checkSnapshot(spec.FromSnapshot); err != nil {
			return ContainerInfo{}, err
		}
		parent = snapKey(spec.Bot, spec.FromSnapshot)
		if _, err := sn.Stat(ctx, parent); err != nil {
			return ContainerInfo{}, fmt.Errorf("snapshot %q of bot %q: %w", spec.FromSnapshot, spec.Bot, err)
		}
	} else {
		diffIDs, err := img.RootFS(ctx)
		if err != nil {
			return ContainerInfo{}, fmt.Errorf("image %s rootfs: %w", c.cfg.Image, err)
		}
		parent = identity.ChainID(diffIDs).String()
	}
	if !reattached {
		key = activeKey(spec.Bot, generation())
		if _, err := sn.Prepare(ctx, key, parent, snapshots.WithLabels(rootfsLabels(spec.Bot))); err != nil {
			return ContainerInfo{}, fmt.Errorf("prepare rootfs of bot %q: %w", spec.Bot, err)
		}
	}

	labels := map[string]string{}
	for k, v := range spec.Labels {
		labels[k] = v
	}
	labels[LabelBot] = spec.Bot
	labels[LabelData] = spec.DataDir

	ctr, err := c.client.NewContainer(ctx, id,
		containerd.WithImage(img),
		containerd.WithSnapshotter(c.cfg.Snapshotter),
		containerd.WithSnapshot(key),
		containerd.WithRuntime("io.containerd.runc.v2", &options.Options{
			BinaryName:    c.cfg.Runc,
			Root:          c.cfg.RuncRoot,
			SystemdCgroup: false, // cgroupfs driver
		}),
		containerd.WithContainerLabels(labels),
		containerd.WithNewSpec(c.specOpts(img, spec)...),
	)
	if err != nil {
		rctx, cancel := detach(ctx)
		defer cancel()
		if reattached {
			return ContainerInfo{}, fmt.Errorf("create container of bot %q: %w", spec.Bot, err)
		}
		if rerr := sn.Remove(rctx, key); rerr != nil && !errdefs.IsNotFound(rerr) {
			slog.WarnContext(ctx, "remove rootfs of failed container", "key", key, "err", rerr)
		}
		return ContainerInfo{}, fmt.Errorf("create container of bot %q: %w", spec.Bot, err)
	}
	info, err := ctr.Info(ctx)
	if err != nil {
		return ContainerInfo{}, err
	}
	return containerInfo(info), nil
}

// reattachRootfs reports whether spec.RootfsKey names a surviving active
// rootfs of the bot that a new container may take over.
func (c *Containerd) reattachRootfs(ctx context.Context, spec BotSpec) (string, bool, error) {
	if spec.RootfsKey == "" {
		return "", false, nil
	}
	info, err := c.client.SnapshotService(c.cfg.Snapshotter).Stat(ctx, spec.RootfsKey)
	if errdefs.IsNotFound(err) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("rootfs %s of bot %q: %w", spec.RootfsKey, spec.Bot, err)
	}
	if info.Kind != snapshots.KindActive || info.Labels[LabelBot] != spec.Bot {
		return "", false, fmt.Errorf("snapshot %s is not an active rootfs of bot %q: %w", spec.RootfsKey, spec.Bot, errdefs.ErrInvalidArgument)
	}
	return spec.RootfsKey, true, nil
}

func (c *Containerd) specOpts(img containerd.Image, spec BotSpec) []oci.SpecOpts {
	// nodev: a device node the bot makes in /data (it has CAP_MKNOD)
	// cannot be opened in the bot; nosuid: a setuid file there gains no
	// privilege in it. (The FUSE mount of data/ is nosuid,nodev too.)
	mounts := []specs.Mount{{
		Type: "bind", Source: spec.DataDir, Destination: "/data",
		Options: []string{"rbind", "rw", "nosuid", "nodev"},
	}}
	for _, m := range []struct{ src, dst string }{
		{c.cfg.ResolvConf, "/etc/resolv.conf"},
		{c.cfg.Localtime, "/etc/localtime"},
	} {
		if m.src != "" {
			mounts = append(mounts, specs.Mount{
				Type: "bind", Source: m.src, Destination: m.dst,
				Options: []string{"rbind", "ro", "nosuid", "nodev"},
			})
		}
	}
	opts := []oci.SpecOpts{
		oci.WithImageConfig(img),
		oci.WithHostname(spec.Bot),
		oci.WithMounts(mounts),
		// A private network namespace; Start pins one and joins the
		// bridge before the task runs.
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace}),
	}
	if len(spec.Args) > 0 {
		opts = append(opts, oci.WithProcessArgs(spec.Args...))
	}
	if len(spec.Env) > 0 {
		opts = append(opts, oci.WithEnv(spec.Env))
	}
	return opts
}

// Container describes the bot's container.
func (c *Containerd) Container(ctx context.Context, bot string) (_ ContainerInfo, err error) {
	defer native(&err)
	_, info, err := c.loadInfo(c.ns(ctx), bot)
	if err != nil {
		return ContainerInfo{}, err
	}
	return containerInfo(info), nil
}

// Containers lists every container labelled with a bot.
func (c *Containerd) Containers(ctx context.Context) (_ []ContainerInfo, err error) {
	defer native(&err)
	ctx = c.ns(ctx)
	list, err := c.client.ContainerService().List(ctx, `labels."`+LabelBot+`"`)
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	out := make([]ContainerInfo, 0, len(list))
	for _, info := range list {
		out = append(out, containerInfo(info))
	}
	return out, nil
}

func containerInfo(info containers.Container) ContainerInfo {
	return ContainerInfo{
		Bot:         info.Labels[LabelBot],
		ID:          info.ID,
		Image:       info.Image,
		Snapshotter: info.Snapshotter,
		RootfsKey:   info.SnapshotKey,
		DataDir:     info.Labels[LabelData],
		Labels:      info.Labels,
		Created:     info.CreatedAt,
		NetNS:       info.Labels[LabelNetNS],
		IP:          info.Labels[LabelIP],
	}
}

// Delete removes the bot's container, its rootfs and all of its snapshots.
// It is idempotent: what a failed earlier Delete left behind is removed;
// NotFound only when there was nothing at all.
func (c *Containerd) Delete(ctx context.Context, bot string) (err error) {
	defer native(&err)
	ctx = c.ns(ctx)
	ctr, err := c.load(ctx, bot)
	found := err == nil
	switch {
	case err == nil:
		if err := c.deleteContainer(ctx, bot, ctr); err != nil {
			return err
		}
	case errdefs.IsNotFound(err):
		// The container is gone; an IPAM lease may not be.
		if ip, ok := c.net.leased(ContainerID(bot)); ok {
			found = true
			if err := c.net.teardown(ctx, ContainerID(bot), ""); err != nil {
				return fmt.Errorf("release address %s of bot %q: %w", ip, bot, err)
			}
		}
	default:
		return err
	}
	// The views go, and the snapshots after them, with c.views held: no
	// view is made again in between.
	c.views.Lock()
	defer c.views.Unlock()
	if err := c.unmountViews(bot); err != nil {
		return err
	}
	n, err := c.removeBotSnapshots(ctx, bot)
	if err != nil {
		return err
	}
	if !found && n == 0 {
		return fmt.Errorf("bot %q has no container or snapshots: %w", bot, errdefs.ErrNotFound)
	}
	return nil
}

func (c *Containerd) deleteContainer(ctx context.Context, bot string, ctr containerd.Container) error {
	task, err := ctr.Task(ctx, nil)
	if err == nil {
		st, err := task.Status(ctx)
		if err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("task of bot %q: %w", bot, err)
		}
		if st.Status == containerd.Running || st.Status == containerd.Paused || st.Status == containerd.Pausing {
			return fmt.Errorf("bot %q is %s: stop it first: %w", bot, st.Status, errdefs.ErrFailedPrecondition)
		}
	} else if !errdefs.IsNotFound(err) {
		return fmt.Errorf("task of bot %q: %w", bot, err)
	}
	// Any other task, seen or not, goes before the container: without
	// the container the task service can no longer end its shim.
	if _, err := c.endLeftoverTask(ctx, ctr.ID()); err != nil {
		return fmt.Errorf("delete task of bot %q: %w", bot, err)
	}
	if err := c.releaseNetwork(ctx, ctr); err != nil {
		return err
	}
	if err := ctr.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete container of bot %q: %w", bot, err)
	}
	return nil
}

// removeBotSnapshots removes every snapshot labelled with the bot,
// children before parents. It returns how many it removed.
func (c *Containerd) removeBotSnapshots(ctx context.Context, bot string) (int, error) {
	sn := c.client.SnapshotService(c.cfg.Snapshotter)
	n, err := RemoveSnapshots(ctx, sn, `labels."`+LabelBot+`"==`+strconv.Quote(bot))
	if err != nil {
		return n, fmt.Errorf("snapshots of bot %q: %w", bot, err)
	}
	return n, nil
}

// RemoveSnapshots removes every snapshot matching the filters (all of them
// with none), children before parents, and returns how many it removed.
func RemoveSnapshots(ctx context.Context, sn snapshots.Snapshotter, filters ...string) (int, error) {
	parents := map[string]string{}
	err := sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		parents[info.Name] = info.Parent
		return nil
	}, filters...)
	if err != nil {
		return 0, fmt.Errorf("list snapshots: %w", err)
	}
	removed := 0
	for len(parents) > 0 {
		isParent := map[string]bool{}
		for _, p := range parents {
			isParent[p] = true
		}
		progress := false
		for key := range parents {
			if isParent[key] {
				continue
			}
			if err := sn.Remove(ctx, key); err != nil && !errdefs.IsNotFound(err) {
				return removed, fmt.Errorf("remove snapshot %s: %w", key, err)
			}
			delete(parents, key)
			removed++
			progress = true
		}
		if !progress {
			return removed, fmt.Errorf("snapshot parents form a cycle: %w", errdefs.ErrFailedPrecondition)
		}
	}
	return removed, nil
}
