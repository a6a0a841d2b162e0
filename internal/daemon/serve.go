package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	_ "net/http/pprof" // --pprof: the profiles on http.DefaultServeMux
	"path/filepath"
	"time"

	"github.com/memohfs/memohfs/control"
	"github.com/memohfs/memohfs/fsnodes"
	"github.com/memohfs/memohfs/mount"
	"github.com/memohfs/memohfs/runtime"
	"github.com/memohfs/memohfs/store"
	"github.com/prometheus/client_golang/prometheus"
)

// Serve serves o.Mount until SIGINT or SIGTERM (or ctx ends): connect the
// runtime and the store, load the bots, mount, reconcile in the
// background, serve, then unmount and let go of everything. Bots keep
// running unless o.StopBotsOnExit. reload runs on SIGHUP.
func Serve(ctx context.Context, o Options, log *slog.Logger, reload func()) (err error) {
	if o.Pprof != "" {
		go func() {
			log.Info("profiles", "addr", o.Pprof)
			if err := http.ListenAndServe(o.Pprof, nil); err != nil {
				log.Error("pprof", "err", err)
			}
		}()
	}
	var reg *prometheus.Registry
	if o.Metrics != "" {
		var stop func()
		reg, stop, err = serveMetrics(o.Metrics, log)
		if err != nil {
			return err
		}
		defer stop()
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
	v, err := rt.Version(ctx)
	if err != nil {
		return fmt.Errorf("containerd: %w", err)
	}
	log.Info("containerd", "address", o.Runtime.Address, "version", v)
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
	copts := control.Options{DataRoot: o.DataRoot, Logger: log, TrashKeep: o.TrashKeep}
	fopts := fsnodes.Options{
		AllowOther:     o.AllowOther,
		Debug:          o.DebugFUSE,
		DataBinds:      o.DataBinds,
		FollowSymlinks: o.FollowSymlinks,
		Logger:         log,
	}
	if reg != nil { // a nil *Registry in the interface would not be nil
		copts.Metrics, fopts.Metrics = reg, reg
	}
	ctl, err := control.New(ctx, rt, st, copts)
	if err != nil {
		return err
	}
	defer ctl.Close()

	m, err := fsnodes.Mount(o.Mount, ctl, fopts)
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
	np, err := serve9P(ctl, m, o, log)
	if err != nil {
		m.Unmount()
		return err
	}

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
	np.Close() // its blocked readers answered, its connections ended
	m.Stop()
	stopReconcile()
	<-reconciled
	if err != nil {
		return err
	}
	log.Info("unmounted", "mount", o.Mount, "how", string(mode))
	if o.StopBotsOnExit {
		stopRunning(ctl, log)
	}
	uctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := rt.UnmountAll(uctx); err != nil {
		log.Warn("unmount snapshot views", "err", err)
	}
	return nil
}

// stopRunning stops every running bot (Options.StopBotsOnExit), giving
// them two minutes in all.
func stopRunning(ctl *control.Controller, log *slog.Logger) {
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
