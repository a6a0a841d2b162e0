package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/memohfs/memohfs/runtime"
	"github.com/opencontainers/go-digest"
)

// Containerd is the run's private containerd daemon.
type Containerd struct {
	Dir     string // root, state, sockets, shim sockets and log live here
	Address string
	BinDir  string
	stamp   string
	done    chan struct{}
}

const containerdConfig = `# private containerd for memohfs tests (config version 4, containerd v2)
version = 4
root  = '{{DIR}}/root'
state = '{{DIR}}/state'
temp  = '{{DIR}}/tmp'
imports = []
disabled_plugins = [
  'io.containerd.grpc.v1.cri',
  'io.containerd.cri.v1.images',
  'io.containerd.cri.v1.runtime',
  'io.containerd.podsandbox.controller.v1.podsandbox',
  'io.containerd.nri.v1.nri',
  'io.containerd.internal.v1.opt',
  'io.containerd.tracing.processor.v1.otlp',
  'io.containerd.internal.v1.tracing',
  'io.containerd.snapshotter.v1.btrfs',
  'io.containerd.snapshotter.v1.zfs',
  'io.containerd.snapshotter.v1.devmapper',
  'io.containerd.snapshotter.v1.blockfile',
  'io.containerd.snapshotter.v1.erofs',
]

[debug]
  level = 'warn'

[plugins]
  [plugins.'io.containerd.server.v1.grpc']
    address = '{{DIR}}/c.sock'
  [plugins.'io.containerd.server.v1.ttrpc']
    address = '{{DIR}}/c.sock.ttrpc'
  [plugins.'io.containerd.server.v1.debug']
    address = '{{DIR}}/debug.sock'
  [plugins.'io.containerd.shim.v1.manager']
    socket_dir = '{{DIR}}/s'
  [plugins.'io.containerd.gc.v1.scheduler']
    startup_delay = '100ms'
`

// ContainerdBinDir finds the containerd binaries `make deps` built for the
// version go.mod pins.
func ContainerdBinDir() (string, error) {
	dir := os.Getenv("MEMOHFS_CONTAINERD_BIN")
	if dir == "" {
		v := ContainerdVersion()
		if v == "" {
			return "", errors.New("cannot tell the containerd version from the build info")
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

func startContainerd(runDir string) (*Containerd, error) {
	bin, err := ContainerdBinDir()
	if err != nil {
		return nil, err
	}
	if _, err := lookPath("runc", "/usr/sbin", "/usr/bin"); err != nil {
		return nil, fmt.Errorf("runc missing (run `make deps`): %w", err)
	}
	dir := filepath.Join(runDir, "ctrd")
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, err
	}
	conf := strings.ReplaceAll(containerdConfig, "{{DIR}}", dir)
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(conf), 0o644); err != nil {
		return nil, err
	}
	return launchContainerd(dir, bin)
}

// launchContainerd starts the daemon of dir (fresh, or again over the state
// of a dead run) and waits until it answers.
func launchContainerd(dir, bin string) (*Containerd, error) {
	c := &Containerd{Dir: dir, Address: filepath.Join(dir, "c.sock"), BinDir: bin, done: make(chan struct{})}
	logf, err := os.OpenFile(filepath.Join(dir, "containerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(bin, "containerd"), "--config", filepath.Join(dir, "config.toml"))
	// The daemon finds its shim by PATH; runc comes from the system.
	cmd.Env = append(os.Environ(), "PATH="+bin+":/usr/sbin:/usr/bin:/sbin:/bin")
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group: a ^C to `go test` must not reach the daemon
	// before the teardown does its work in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	c.stamp = ownerStamp(cmd.Process.Pid)
	if err := os.WriteFile(filepath.Join(dir, "containerd.pid"), []byte(c.stamp), 0o644); err != nil {
		return nil, err
	}
	go func() { cmd.Wait(); close(c.done) }()
	err = waitFor(20*time.Second, func() error {
		select {
		case <-c.done:
			return errors.New("containerd exited")
		default:
		}
		return c.ping()
	})
	if err != nil {
		c.stop()
		return nil, fmt.Errorf("containerd did not come up: %v; log: %s", err, tail(filepath.Join(dir, "containerd.log"), 10))
	}
	return c, nil
}

func (c *Containerd) ping() error {
	client, err := c.client()
	if err != nil {
		return err
	}
	defer client.Close()
	ctx, cancel := ctxTimeout(time.Second)
	defer cancel()
	_, err = client.Version(ctx)
	return err
}

func (c *Containerd) client() (*containerd.Client, error) {
	return containerd.New(c.Address, containerd.WithTimeout(2*time.Second))
}

// Pid is the daemon's pid.
func (c *Containerd) Pid() int {
	pid, _ := stampAlive(c.stamp)
	return pid
}

// Restart stops the daemon and starts it again over the same state (shims
// and tasks keep running across it).
func (c *Containerd) Restart(t testing.TB) {
	t.Helper()
	if err := c.stop(); err != nil {
		t.Fatal(err)
	}
	nc, err := launchContainerd(c.Dir, c.BinDir)
	if err != nil {
		t.Fatal(err)
	}
	*c = *nc
}

func (c *Containerd) stop() error {
	if c == nil || c.stamp == "" {
		return nil
	}
	return terminate(c.stamp, syscall.SIGTERM, 10*time.Second)
}

// sweepAll empties every namespace of the daemon, then releases what CNI
// and pinned netns files tests left, then unmounts leftovers.
func (c *Containerd) sweepAll(n NetInfo) error {
	if c == nil {
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
		if err := sweepNamespace(ctx, client, ns, n); err != nil {
			errs = append(errs, err)
		}
	}
	if err := n.sweepCNI(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// SweepNamespace removes everything in a namespace, in order: tasks,
// containers (with their CNI and netns), snapshots, images, leases,
// content, the namespace.
func sweepNamespace(ctx context.Context, client *containerd.Client, ns string, n NetInfo) error {
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
					case <-time.After(10 * time.Second):
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
	return errors.Join(errs...)
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
