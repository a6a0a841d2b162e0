package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
)

func viewKey(bot, name string) string { return "memohfs/" + bot + "/view/" + name }

func (c *Containerd) viewDir(bot, name string) string {
	return filepath.Join(c.cfg.StateDir, "views", bot, name)
}

// MountSnapshot mounts a read-only view of the bot's snapshot name under the
// state dir and returns the directory.
func (c *Containerd) MountSnapshot(ctx context.Context, bot, name string) (_ string, err error) {
	defer native(&err)
	if err := checkBot(bot); err != nil {
		return "", err
	}
	if err := checkSnapshot(name); err != nil {
		return "", err
	}
	ctx = c.ns(ctx)
	c.views.Lock()
	defer c.views.Unlock()
	dir := c.viewDir(bot, name)
	if ok, _ := mountinfo.Mounted(dir); ok {
		return dir, nil
	}
	sn := c.client.SnapshotService(c.cfg.Snapshotter)
	key := viewKey(bot, name)
	mounts, err := sn.Mounts(ctx, key)
	if errdefs.IsNotFound(err) {
		if _, err := sn.Stat(ctx, snapKey(bot, name)); err != nil {
			return "", fmt.Errorf("snapshot %q of bot %q: %w", name, bot, err)
		}
		// A GC root: the garbage collector must not take a view that is
		// mounted; UnmountSnapshot removes it.
		mounts, err = sn.View(ctx, key, snapKey(bot, name), snapshots.WithLabels(map[string]string{
			LabelBot: bot, labelGCRoot: time.Now().UTC().Format(time.RFC3339Nano)}))
	}
	if err != nil {
		return "", fmt.Errorf("view of snapshot %q of bot %q: %w", name, bot, err)
	}
	for i := range mounts {
		if !hasOption(mounts[i].Options, "ro") {
			mounts[i].Options = append(mounts[i].Options, "ro")
		}
		mounts[i].Options = append(mounts[i].Options, "nosuid", "nodev")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	if err := mount.All(mounts, dir); err != nil {
		return "", fmt.Errorf("mount view of snapshot %q of bot %q: %w", name, bot, err)
	}
	return dir, nil
}

func hasOption(opts []string, o string) bool {
	for _, x := range opts {
		if x == o {
			return true
		}
	}
	return false
}

// UnmountSnapshot unmounts the view of the bot's snapshot name and removes
// the view snapshot.
func (c *Containerd) UnmountSnapshot(ctx context.Context, bot, name string) (err error) {
	defer native(&err)
	if err := checkBot(bot); err != nil {
		return err
	}
	if err := checkSnapshot(name); err != nil {
		return err
	}
	c.views.Lock()
	defer c.views.Unlock()
	return c.unmountSnapshot(c.ns(ctx), bot, name)
}

// unmountSnapshot is UnmountSnapshot with c.views held.
func (c *Containerd) unmountSnapshot(ctx context.Context, bot, name string) error {
	dir := c.viewDir(bot, name)
	if err := unmountDir(dir); err != nil {
		return err
	}
	sn := c.client.SnapshotService(c.cfg.Snapshotter)
	if err := sn.Remove(ctx, viewKey(bot, name)); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("remove view of snapshot %q of bot %q: %w", name, bot, err)
	}
	return nil
}

// unmountViews unmounts every view of a bot (or of all bots when bot is
// ""). c.views is held.
func (c *Containerd) unmountViews(bot string) error {
	root := filepath.Join(c.cfg.StateDir, "views")
	if bot != "" {
		root = filepath.Join(root, bot)
	}
	mps, err := mountinfo.GetMounts(mountinfo.PrefixFilter(root))
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range mps {
		if err := unmountDir(m.Mountpoint); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// UnmountAll unmounts every snapshot view; the view snapshots stay for the
// next start.
func (c *Containerd) UnmountAll(ctx context.Context) error {
	c.views.Lock()
	defer c.views.Unlock()
	return c.unmountViews("")
}

func unmountDir(dir string) error {
	// UnmountAll pops stacked mounts until none is left and is a no-op
	// for a dir that is not mounted or does not exist.
	if err := mount.UnmountAll(dir, 0); err != nil {
		if !errors.Is(err, syscall.EBUSY) {
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
		// Someone still has it open (a reader through the mount): detach
		// it, the kernel frees it when they let go.
		if err := mount.UnmountAll(dir, syscall.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ENOTEMPTY) {
		return err
	}
	return nil
}
