package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/grpc/status"
)

// Containerd implements Runtime over a containerd v2 daemon and go-cni.
type Containerd struct {
	cfg    Config
	client *containerd.Client
	net    *network
	// starting is held (shared) by a start from its network setup until
	// its task runs, and exclusively by the leak sweep: a start's fresh
	// lease is never mistaken for a leak.
	starting sync.RWMutex
	// views is held by a snapshot view's mount and unmount: the FUSE view
	// and its bind may ask for the same view at once, and only one may
	// create it.
	views sync.Mutex
}

var _ Runtime = (*Containerd)(nil)

// New connects to containerd (lazily: an unreachable daemon shows up as
// Unavailable errors on the first call) and loads the CNI network.
func New(cfg Config) (*Containerd, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	client, err := containerd.New(cfg.Address,
		containerd.WithDefaultNamespace(cfg.Namespace),
		containerd.WithTimeout(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("containerd %s: %w: %w", cfg.Address, errdefs.ErrUnavailable, err)
	}
	nw, err := newNetwork(cfg.Network, cfg.Namespace, cfg.NetNSDir)
	if err != nil {
		client.Close()
		return nil, err
	}
	return &Containerd{cfg: cfg, client: client, net: nw}, nil
}

// Config returns the effective configuration (defaults filled in).
func (c *Containerd) Config() Config { return c.cfg }

// Client gives the underlying containerd client, for tests and tools.
func (c *Containerd) Client() *containerd.Client { return c.client }

// Version returns the daemon's version; Unavailable if it does not answer.
func (c *Containerd) Version(ctx context.Context) (_ string, err error) {
	defer native(&err)
	v, err := c.client.Version(c.ns(ctx))
	if err != nil {
		return "", fmt.Errorf("containerd %s: %w", c.cfg.Address, err)
	}
	return v.Version, nil
}

// LogPath is the host file receiving the bot's stdout and stderr.
func (c *Containerd) LogPath(bot string) string { return c.cfg.LogPath(bot) }

// Defaults says which image and snapshotter new bots get.
func (c *Containerd) Defaults() (image, snapshotter string) { return c.cfg.Image, c.cfg.Snapshotter }

// Close drops the connection. Containers and tasks keep running.
func (c *Containerd) Close() error { return c.client.Close() }

func (c *Containerd) ns(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, c.cfg.Namespace)
}

// load finds the bot's container by its id.
func (c *Containerd) load(ctx context.Context, bot string) (containerd.Container, error) {
	if err := checkBot(bot); err != nil {
		return nil, err
	}
	ctr, err := c.client.LoadContainer(ctx, ContainerID(bot))
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("container of bot %q: %w", bot, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("load container of bot %q: %w", bot, err)
	}
	return ctr, nil
}

// loadInfo finds the bot's container and reads its record.
func (c *Containerd) loadInfo(ctx context.Context, bot string) (containerd.Container, containers.Container, error) {
	ctr, err := c.load(ctx, bot)
	if err != nil {
		return nil, containers.Container{}, err
	}
	info, err := ctr.Info(ctx)
	if err != nil {
		return nil, containers.Container{}, fmt.Errorf("container of bot %q: %w", bot, err)
	}
	return ctr, info, nil
}

// generation returns a sortable, unique suffix for snapshot keys.
func generation() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + hex.EncodeToString(b[:])
}

// detach returns a context that survives cancellation of ctx, for cleanup
// that must run to completion (resume after pause, rollback of a half-made
// change).
func detach(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
}

// classified keeps an error's text and adds the errdefs class of a raw
// gRPC status found inside it (a few client calls return those
// unconverted).
type classified struct {
	err   error
	class error
}

func (e classified) Error() string   { return e.err.Error() }
func (e classified) Unwrap() []error { return []error{e.err, e.class} }

// native classifies *errp in place; use as `defer native(&err)` in every
// exported method.
func native(errp *error) {
	err := *errp
	if err == nil {
		return
	}
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) {
		return
	}
	cls := errgrpc.ToNative(se.(error))
	for _, is := range []func(error) bool{errdefs.IsNotFound, errdefs.IsAlreadyExists, errdefs.IsFailedPrecondition,
		errdefs.IsInvalidArgument, errdefs.IsUnavailable, errdefs.IsCanceled, errdefs.IsDeadlineExceeded} {
		if is(err) {
			return // already classified
		}
	}
	*errp = classified{err: err, class: cls}
}
