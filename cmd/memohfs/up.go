package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/memohfs/memohfs/internal/embedded"
	"github.com/memohfs/memohfs/mount"
	"github.com/memohfs/memohfs/runtime/ociimage"
	"github.com/urfave/cli/v2"
)

func upCommand() *cli.Command {
	flags := []cli.Flag{
		str("state-dir", "/var/lib/memohfs", "everything memohfs keeps: Postgres, containerd, bots' data, snapshots"),
		str("containerd-bin", "", "dir with containerd and containerd-shim-runc-v2 (default: next to memohfs, then PATH)"),
		str("postgres-bin", "", "dir with initdb and postgres (default: the newest /usr/lib/postgresql/<v>/bin)"),
	}
	return withConfig(&cli.Command{
		Name:  "up",
		Usage: "run everything on this machine: a private Postgres and containerd under --state-dir, then serve",
		Description: "up starts (or finds still running) a Postgres cluster and a containerd daemon of its own under\n" +
			"--state-dir, writes the bridge network, imports the bundled bot image, and serves the mount until\n" +
			"SIGINT/SIGTERM; then it unmounts and stops what it started. Running up again on the same state dir\n" +
			"finds the bots, their data and snapshots as they were.",
		Flags: append(flags, commonFlags()...),
		Action: func(c *cli.Context) error {
			sigs := mount.Trap()
			logs, err := newLogging(c, os.Stderr)
			if err != nil {
				return err
			}
			return up(c, logs, sigs)
		},
	})
}

// upLayout is where `up` keeps things.
type upLayout struct {
	State, Run string
}

func newUpLayout(state string) (upLayout, error) {
	abs, err := filepath.Abs(state)
	if err != nil {
		return upLayout{}, err
	}
	// Sockets (unix paths: at most 108 bytes) in a short dir of their own.
	run, err := embedded.RunDir(abs)
	if err != nil {
		return upLayout{}, err
	}
	if err := os.MkdirAll(run, 0o711); err != nil {
		return upLayout{}, err
	}
	return upLayout{State: abs, Run: run}, nil
}

func (l upLayout) path(p ...string) string { return filepath.Join(append([]string{l.State}, p...)...) }

// findBin finds a dir holding all of names: the configured one, the dir
// memohfs runs from, then PATH.
func findBin(configured string, names ...string) (string, error) {
	has := func(dir string) bool {
		for _, n := range names {
			if fi, err := os.Stat(filepath.Join(dir, n)); err != nil || fi.Mode()&0o111 == 0 {
				return false
			}
		}
		return true
	}
	if configured != "" {
		if has(configured) {
			return configured, nil
		}
		return "", fmt.Errorf("%s lacks %v", configured, names)
	}
	if exe, err := os.Executable(); err == nil && has(filepath.Dir(exe)) {
		return filepath.Dir(exe), nil
	}
	if p, err := exec.LookPath(names[0]); err == nil && has(filepath.Dir(p)) {
		return filepath.Dir(p), nil
	}
	return "", fmt.Errorf("%v not found next to memohfs or in PATH (make build puts them in bin/)", names)
}

func up(c *cli.Context, logs *logging, sigs <-chan os.Signal) error {
	log := logs.logger
	ctx := context.Background()
	l, err := newUpLayout(c.String("state-dir"))
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("up runs containers and mounts: run it as root")
	}
	ctrdBin, err := findBin(c.String("containerd-bin"), "containerd", "containerd-shim-runc-v2")
	if err != nil {
		return err
	}

	pg, err := embedded.StartPostgres(ctx, embedded.PostgresConfig{
		BinDir: c.String("postgres-bin"), Dir: l.path("postgres"), SocketDir: filepath.Join(l.Run, "pg"),
	})
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	log.Info("postgres", "dir", l.path("postgres"), "pid", pidOf(pg.Stamp()), "adopted", pg.Adopted)
	defer func() {
		if err := pg.Stop(); err != nil {
			log.Error("stop postgres", "err", err)
		} else {
			log.Info("postgres stopped")
		}
	}()
	if err := pg.EnsureDatabase(ctx, "memohfs"); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}

	ctrd, err := embedded.StartContainerd(ctx, embedded.ContainerdConfig{
		BinDir: ctrdBin, Dir: l.path("containerd"), SocketDir: filepath.Join(l.Run, "ctrd"),
	})
	if err != nil {
		return fmt.Errorf("containerd: %w", err)
	}
	log.Info("containerd", "dir", l.path("containerd"), "pid", pidOf(ctrd.Stamp()), "adopted", ctrd.Adopted)
	defer func() {
		if err := ctrd.Stop(15 * time.Second); err != nil {
			log.Error("stop containerd", "err", err)
		} else {
			log.Info("containerd stopped (bots that run keep running)")
		}
	}()

	archive := l.path("images", "bot.tar")
	if err := os.MkdirAll(filepath.Dir(archive), 0o755); err != nil {
		return err
	}
	if _, err := os.Stat(archive); err != nil {
		res, err := ociimage.WriteFile(archive, ociimage.Options{})
		if err != nil {
			return fmt.Errorf("bot image: %w", err)
		}
		log.Info("built the bot image", "name", res.Name, "digest", res.ManifestDigest, "archive", archive)
	}

	o := upOptions(c, l)
	o.DatabaseURL = pg.URL("memohfs")
	o.Runtime.Address = ctrd.Address()
	o.Runtime.ImageArchive = archive
	o.Signals = sigs

	fmt.Fprintf(c.App.ErrWriter, "memohfs: serving %s (state in %s). Try:\n"+
		"  mkdir %[1]s/demo && echo start > %[1]s/demo/ctl && cat %[1]s/demo/status\n", o.Mount, l.State)
	return serve(ctx, o, logs, func() { logs.reload(c) })
}

// upOptions is what up serves with, for the layout l: its Postgres and
// containerd are addressed where up puts them.
func upOptions(c *cli.Context, l upLayout) serveOptions {
	o := serveOptions{
		Mount:          c.String("mount"),
		DatabaseURL:    embedded.PostgresConfig{SocketDir: filepath.Join(l.Run, "pg")}.URL("memohfs"),
		DataRoot:       l.path("data"),
		AllowOther:     c.Bool("allow-other"),
		StopBotsOnExit: c.Bool("stop-bots-on-exit"),
		DebugFUSE:      c.Bool("debug-fuse"),
		DataBinds:      c.Bool("data-binds"),
		FollowSymlinks: c.Bool("follow-symlinks"),
		Pprof:          c.String("pprof"),
	}
	o.Runtime.Address = embedded.ContainerdConfig{Dir: l.path("containerd"), SocketDir: filepath.Join(l.Run, "ctrd")}.Address()
	o.Runtime.Namespace = "memohfs"
	o.Runtime.ImageArchive = l.path("images", "bot.tar")
	o.Runtime.StateDir = l.path("runtime")
	o.Runtime.Network.Bridge = c.String("bridge")
	o.Runtime.Network.Subnet = c.String("subnet")
	o.Runtime.Network.PluginDirs = splitPath(c.String("cni-bin-dir"))
	o.Runtime.Network.ConfDir = l.path("cni", "net.d")
	o.Runtime.Network.IPAMDir = l.path("cni", "ipam")
	return o
}

func pidOf(s embedded.Stamp) int { pid, _ := s.Pid(); return pid }

func splitPath(s string) []string {
	var out []string
	for _, p := range filepath.SplitList(s) {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}
