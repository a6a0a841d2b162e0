package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
)

// Containerd implements Runtime over a containerd v2 daemon and go-cni.
type Containerd struct {
	cfg    Config
	client *containerd.Client
	net    *network
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
func (c *Containerd) Version(ctx context.Context) (string, error) {
	v, err := c.client.Version(c.ns(ctx))
	if err != nil {
		return "", fmt.Errorf("containerd %s: %w", c.cfg.Address, err)
	}
	return v.Version, nil
}

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
