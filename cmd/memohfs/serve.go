package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	_ "net/http/pprof"
	"os"
	"path/filepath"
	"time"

	"github.com/memohfs/memohfs/control"
	"github.com/memohfs/memohfs/fsnodes"
	"github.com/memohfs/memohfs/mount"
	"github.com/memohfs/memohfs/runtime"
	"github.com/memohfs/memohfs/store"
	"github.com/urfave/cli/v2"
)

// serveOptions are what serving a mount needs, from `serve`'s flags or
// from what `up` started.
type serveOptions struct {
	Mount          string
	DatabaseURL    string
	Runtime        runtime.Config
	DataRoot       string
	AllowOther     bool
	StopBotsOnExit bool
	DebugFUSE      bool
	DataBinds      bool // bind each bot's data dir over its data/ node
	FollowSymlinks bool // let the host follow symlinks under the mount
	Pprof          string
	// Signals caught since the command began (mount.Trap).
	Signals <-chan os.Signal
}

func serveFlags() []cli.Flag {
	return append([]cli.Flag{
		str("database-url", "", "Postgres connection string (libpq URL or key=value)"),
		str("containerd-address", "/run/containerd/containerd.sock", "containerd socket"),
		str("namespace", "memohfs", "containerd namespace"),
		str("state-dir", "/var/lib/memohfs", "runtime state: runc root, netns pins, FIFOs, bot logs, CNI state"),
		str("data-root", "", "bots' data dirs and snapshot data (default: <state-dir>/data)"),
		str("image", "", "bot image (default: the bundled busybox image)"),
		str("image-archive", "", "OCI layout tar imported when the image is missing (else it is pulled)"),
		str("snapshotter", "overlayfs", "containerd snapshotter"),
		str("cni-conf-dir", "", "where the bridge conflist is written (default: <state-dir>/cni/net.d)"),
	}, commonFlags()...)
}

// commonFlags are the flags serve and up share.
func commonFlags() []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "mount", Usage: "mount point", Required: true, EnvVars: env("mount")},
		str("cni-bin-dir", "/usr/lib/cni:/opt/cni/bin", "CNI plugin dirs, colon separated"),
		str("subnet", "10.209.0.0/16", "bots' bridge subnet"),
		str("bridge", "memohfs0", "bots' bridge device"),
		boolf("allow-other", "let users other than root use the mount (each sees only their bots)"),
		boolf("stop-bots-on-exit", "stop every bot when memohfs exits (by default they keep running)"),
		boolf("debug-fuse", "log every FUSE request"),
		boolOn("data-binds", "bind each bot's data dir over /M/<bot>/data (nosymfollow, nodev, nosuid), so the kernel serves it:\n"+
			"native speed, inotify that hears the bot. Needs root and Linux 5.12; without them, or with --data-binds=false,\n"+
			"data/ goes through FUSE (memohfs doctor says which)"),
		boolf("follow-symlinks", "let the host follow symlinks under the mount. RISK: a bot's absolute link names the host's\n"+
			"files, not the bot's, so root's cat, >> or mv through /M/<bot>/data could reach any host file (off: a path\n"+
			"walk through a link answers ELOOP; ls -l, readlink, rsync -a, cp -a and tar still see links as links)"),
		str("pprof", "", "serve Go profiles (net/http/pprof) on this address, e.g. 127.0.0.1:6060"),
	}, logFlags()...)
}

func serveCommand() *cli.Command {
	return withConfig(&cli.Command{
		Name:  "serve",
		Usage: "serve the mount against an existing containerd and Postgres until SIGINT/SIGTERM",
		Description: "serve connects to a containerd (--containerd-address) and a Postgres (--database-url) that\n" +
			"run on their own, and serves /M/<bot> at --mount. Bots keep running when it exits.",
		Flags: serveFlags(),
		Action: func(c *cli.Context) error {
			sigs := mount.Trap()
			logs, err := newLogging(c, os.Stderr)
			if err != nil {
				return err
			}
			if c.String("database-url") == "" {
				return errors.New("--database-url (or MEMOHFS_DATABASE_URL) is required")
			}
			o := serveOptionsFrom(c)
			o.Signals = sigs
			return serve(context.Background(), o, logs, func() { logs.reload(c) })
		},
	})
}

func serveOptionsFrom(c *cli.Context) serveOptions {
	state := c.String("state-dir")
	dataRoot := c.String("data-root")
	if dataRoot == "" {
		dataRoot = filepath.Join(state, "data")
	}
	confDir := c.String("cni-conf-dir")
	if confDir == "" {
		confDir = filepath.Join(state, "cni", "net.d")
	}
	return serveOptions{
		Mount:          c.String("mount"),
		DatabaseURL:    c.String("database-url"),
		DataRoot:       dataRoot,
		AllowOther:     c.Bool("allow-other"),
		StopBotsOnExit: c.Bool("stop-bots-on-exit"),
		DebugFUSE:      c.Bool("debug-fuse"),
		DataBinds:      c.Bool("data-binds"),
		FollowSymlinks: c.Bool("follow-symlinks"),
		Pprof:          c.String("pprof"),
		Runtime: runtime.Config{
			Address:      c.String("containerd-address"),
			Namespace:    c.String("namespace"),
			Snapshotter:  c.String("snapshotter"),
			Image:        c.String("image"),
			ImageArchive: c.String("image-archive"),
			StateDir:     filepath.Join(state, "runtime"),
			Network: runtime.NetworkConfig{
				Bridge:     c.String("bridge"),
				Subnet:     c.String("subnet"),
				PluginDirs: splitPath(c.String("cni-bin-dir")),
				ConfDir:    confDir,
				IPAMDir:    filepath.Join(state, "cni", "ipam"),
			},
		},
	}
}

// serve runs the mount until a signal: connect the runtime and the store,
// load the bots, mount, reconcile in the background, serve, then unmount
// and let go of everything (bots keep running unless asked otherwise).
func serve(ctx context.Context, o serveOptions, logs *logging, reload func()) error {
	log := logs.logger
	if o.Pprof != "" {
		go func() {
			log.Info("profiles", "addr", o.Pprof)
			if err := http.ListenAndServe(o.Pprof, nil); err != nil {
				log.Error("pprof", "err", err)
			}
		}()
	}
	abs, err := filepath.Abs(o.DataRoot)
	if err != nil {
		return err
	}
	o.DataRoot = abs
	rt, err := runtime.New(o.Runtime)
	if err != nil {
		return err
	}
	defer rt.Close()
	if v, err := rt.Version(ctx); err != nil {
		return fmt.Errorf("containerd: %w", err)
	} else {
		log.Info("containerd", "address", o.Runtime.Address, "version", v)
	}
	img, err := rt.EnsureImage(ctx)
	if err != nil {
		return fmt.Errorf("bot image: %w", err)
	}
	log.Info("bot image", "name", img.Name, "digest", img.Digest, "imported", img.Imported)
	st, err := store.Open(ctx, o.DatabaseURL, store.Options{})
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer st.Close()
	ctl, err := control.New(ctx, rt, st, control.Options{DataRoot: o.DataRoot, Logger: log})
	if err != nil {
		return err
	}
	defer ctl.Close()

	m, err := fsnodes.Mount(o.Mount, ctl, fsnodes.Options{AllowOther: o.AllowOther, Debug: o.DebugFUSE, Logger: log,
		DataBinds: o.DataBinds, FollowSymlinks: o.FollowSymlinks})
	if err != nil {
		return fmt.Errorf("mount %s: %w", o.Mount, err)
	}
	switch m.Replaced {
	case mount.Beneath:
		log.Warn("replaced a stale mount (a memohfs before this one died) from beneath", "mount", o.Mount)
	case mount.Cleared:
		log.Warn("cleared a stale mount (a memohfs before this one died); the kernel cannot mount beneath it, so the mount point was bare for a moment", "mount", o.Mount)
	}
	log.Info("serving", "mount", o.Mount, "bots", len(ctl.Bots()), "data_root", o.DataRoot)

	// Reconcile on a context of its own: not cut short by anything
	// start-up scoped, stopped only when serving stops.
	rctx, stopReconcile := context.WithCancel(context.Background())
	reconciled := make(chan struct{})
	go func() {
		defer close(reconciled)
		if _, err := ctl.Reconcile(rctx); err != nil {
			log.Error("reconcile", "err", err)
		}
	}()

	mode, err := mount.Serve(ctx, m, o.Mount, mount.ServeOptions{
		Stopping: m.Stop, Reload: reload, Logger: log, Signals: o.Signals,
	})
	m.Stop()
	stopReconcile()
	<-reconciled
	if err != nil {
		return err
	}
	log.Info("unmounted", "mount", o.Mount, "how", string(mode))
	if o.StopBotsOnExit {
		stopAll(ctl, log)
	}
	uctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := rt.UnmountAll(uctx); err != nil {
		log.Warn("unmount snapshot views", "err", err)
	}
	return nil
}

// stopAll stops every running bot (--stop-bots-on-exit).
func stopAll(ctl *control.Controller, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, b := range ctl.Bots() {
		if st, err := ctl.Status(b.Name); err == nil && st.State == store.StateRunning {
			if err := ctl.Ctl(ctx, b.Name, "stop"); err != nil {
				log.Error("stop on exit", "bot", b.Name, "err", err)
			} else {
				log.Info("stopped on exit", "bot", b.Name)
			}
		}
	}
}
