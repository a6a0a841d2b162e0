package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/memohfs/memohfs/internal/embedded"
	"github.com/memohfs/memohfs/runtime"
	"github.com/opencontainers/go-digest"
)

// Containerd is the run's private containerd daemon.
type Containerd struct {
	*embedded.Containerd
	// sharedCgroups: the daemon's namespaces are not the test's own (a
	// whole memohfs runs its bots in namespace "memohfs", and runc puts
	// them in /<namespace>/<container> on every instance on the host):
	// a sweep removes the cgroups of its containers, not the parent.
	sharedCgroups bool
}

// ContainerdBinDir finds the containerd binaries `make deps` built for the
// version go.mod pins.
func ContainerdBinDir() (string, error) {
	dir := os.Getenv("MEMOHFS_CONTAINERD_BIN")
	if dir == "" {
		v := ContainerdVersion()
		if v == "" {
			return "", errors.New("cannot tell the containerd version from go.mod")
		}
		dir = filepath.Join(moduleRoot(), ".cache", "containerd", v, "bin")
	}
	for _, b := range []string{"containerd", "ctr", "containerd-shim-runc-v2"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return "", fmt.Errorf("containerd binaries missing in %s (run `make deps`): %w", dir, err)
		}
	}
	return dir, nil
}

func containerdConfig(dir, bin string) embedded.ContainerdConfig {
	return embedded.ContainerdConfig{BinDir: bin, Dir: dir}
}

func startContainerd(runDir string) (*Containerd, error) {
	bin, err := ContainerdBinDir()
	if err != nil {
		return nil, err
	}
	if _, err := lookPath("runc", "/usr/sbin", "/usr/bin"); err != nil {
		return nil, fmt.Errorf("runc missing (run `make deps`): %w", err)
	}
	return launchContainerd(filepath.Join(runDir, "ctrd"), bin)
}

// launchContainerd starts the daemon of dir (fresh, or again over the state
// of a dead run, or adopts it if it still runs).
func launchContainerd(dir, bin string) (*Containerd, error) {
	c, err := embedded.StartContainerd(context.Background(), containerdConfig(dir, bin))
	if err != nil {
		return nil, err
	}
	return &Containerd{Containerd: c}, nil
}

func (c *Containerd) client() (*containerd.Client, error) {
	return containerd.New(c.Address(), containerd.WithTimeout(2*time.Second))
}

// Restart stops the daemon and starts it again over the same state (shims
// and tasks keep running across it).
func (c *Containerd) Restart(t testing.TB) {
	t.Helper()
	if err := c.stop(); err != nil {
		t.Fatal(err)
	}
	nc, err := embedded.StartContainerd(context.Background(), c.Config())
	if err != nil {
		t.Fatal(err)
	}
	c.Containerd = nc
}

func (c *Containerd) stop() error {
	if c == nil || c.Containerd == nil {
		return nil
	}
	return c.Stop(10 * time.Second)
}

// sweepAll empties every namespace of the daemon, then releases what CNI
// and pinned netns files tests left.
func (c *Containerd) sweepAll(n NetInfo) error {
	if c == nil || c.Containerd == nil {
		return nil
	}
	ctx, cancel := ctxTimeout(2 * time.Minute)
	defer cancel()
	client, err := c.client()
	if err != nil {
		return err
	}
	defer client.Close()
	nss, err := client.NamespaceService().List(ctx)
	if err != nil {
		return fmt.Errorf("list namespaces: %w", err)
	}
	var errs []error
	for _, ns := range nss {
		if err := sweepNamespace(ctx, client, ns, n, c.sharedCgroups); err != nil {
			errs = append(errs, err)
		}
	}
	if err := n.sweepCNI(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// sweepNamespace removes everything in a namespace, in order: tasks,
// containers (with their CNI and netns), snapshots, images, leases,
// content, the namespace, then its cgroups: the namespace's parent, or
// with sharedCgroups only its containers' own.
func sweepNamespace(ctx context.Context, client *containerd.Client, ns string, n NetInfo, sharedCgroups bool) error {
	ctx = namespaces.WithNamespace(ctx, ns)
	var errs []error
	note := func(what string, err error) {
		if err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("%s/%s: %w", ns, what, err))
		}
	}
	ctrs, err := client.Containers(ctx)
	note("containers", err)
	for _, ctr := range ctrs {
		if task, err := ctr.Task(ctx, nil); err == nil {
			if st, err := task.Status(ctx); err == nil && st.Status != containerd.Stopped {
				if exited, err := task.Wait(ctx); err == nil {
					note("kill "+ctr.ID(), task.Kill(ctx, syscall.SIGKILL, containerd.WithKillAll))
					select {
					case <-exited:
					case <-time.After(time.Minute):
						note("kill "+ctr.ID(), errors.New("task did not exit after SIGKILL"))
					}
				}
			}
			_, err := task.Delete(ctx, containerd.WithProcessKill)
			note("delete task "+ctr.ID(), err)
		}
	}
	for _, ctr := range ctrs {
		labels, _ := ctr.Labels(ctx)
		if nsPath := labels[runtime.LabelNetNS]; nsPath != "" {
			note("cni "+ctr.ID(), n.removeCNI(ctx, runtime.CNIID(ns, ctr.ID()), nsPath))
		}
		note("delete container "+ctr.ID(), ctr.Delete(ctx, containerd.WithSnapshotCleanup))
	}
	for _, snName := range []string{"overlayfs", "native"} {
		_, err := runtime.RemoveSnapshots(ctx, client.SnapshotService(snName))
		note("snapshots", err)
	}
	imgs, err := client.ImageService().List(ctx)
	note("images", err)
	for _, img := range imgs {
		note("image "+img.Name, client.ImageService().Delete(ctx, img.Name, images.SynchronousDelete()))
	}
	ls, err := client.LeasesService().List(ctx)
	note("leases", err)
	for _, l := range ls {
		note("lease "+l.ID, client.LeasesService().Delete(ctx, l, leases.SynchronousDelete))
	}
	cs := client.ContentStore()
	var blobs []digest.Digest
	note("content", cs.Walk(ctx, func(info content.Info) error {
		blobs = append(blobs, info.Digest)
		return nil
	}))
	for _, d := range blobs {
		note("blob", cs.Delete(ctx, d))
	}
	if len(errs) == 0 {
		note("namespace", client.NamespaceService().Delete(ctx, ns))
	}
	if sharedCgroups {
		// Busy: another instance's container of the same name (the
		// processes of this one are checked by pid, see tiedTo).
		for _, ctr := range ctrs {
			note("cgroups", removeCgroups(filepath.Join(ns, ctr.ID()), true))
		}
	} else {
		note("cgroups", removeCgroups(ns, false))
	}
	return errors.Join(errs...)
}

// removeCgroups removes the cgroup rel (a namespace's parent: runc, cgroupfs
// driver, makes /<ns>/<container> and removes only the leaf; or one
// container's) from every hierarchy, once it is empty; with busyOK one
// that is not empty is left without an error.
func removeCgroups(rel string, busyOK bool) error {
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", rel))
	if d := filepath.Join("/sys/fs/cgroup", rel); dirExists(d) {
		dirs = append(dirs, d)
	}
	var errs []error
	for _, d := range dirs {
		if err := syscall.Rmdir(d); err != nil && err != syscall.ENOENT && !(busyOK && err == syscall.EBUSY) {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

func dirExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}
