package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/memohfs/memohfs/internal/daemon"
	"github.com/memohfs/memohfs/mount"
	"github.com/memohfs/memohfs/runtime"
	"github.com/urfave/cli/v2"
)

// serveFlags are serve's flags: its own, then those it shares with up
// (commonFlags). check has them too.
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

// commonFlags are the flags serve and up share (and so check, which has
// serve's). A new setting for both is a flag here, read in
// serveOptionsFrom into a field of daemon.Options.
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
		str("metrics", "", "serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9464 (off when empty)"),
		strs("9p", "also serve the tree over 9P2000.L at `ADDR`: unix:PATH (mode 0660, root's; unix alone: 9p.sock in\n"+
			"memohfs's run dir) or tcp:HOST:PORT (needs --9p-token-file; loopback only unless --9p-allow-remote);\n"+
			"may be given more than once"),
		str("9p-token-file", "", "file holding the secret a 9P client over TCP sends first (mode 0600; its owner is who the client is)"),
		boolf("9p-allow-remote", "let a 9P TCP listener bind an address other than loopback (9P is not encrypted: tunnel it)"),
		dur("trash-keep", 30*24*time.Hour, "how long the trash (<data-root>/trash) keeps what deleted bots leave; older entries are\n"+
			"removed, logged and counted (0: kept for ever)"),
	}, logFlags()...)
}

func serveCommand() *cli.Command {
	return withConfig(&cli.Command{
		Name:  "serve",
		Usage: "serve the mount against an existing containerd and Postgres until SIGINT/SIGTERM",
		Description: "serve connects to a containerd (--containerd-address) and a Postgres (--database-url) that\n" +
			"run on their own, and serves /M/<bot> at --mount. Bots keep running when it exits.",
		Flags:  serveFlags(),
		Action: serveAction,
	})
}

// serveOptionsFrom is the one place flags become daemon.Options: serve's
// flags, and of them what up and check have (a flag a command lacks reads
// as its zero value; up puts its own over those, daemon.Layout.Options).
func serveOptionsFrom(c *cli.Context) daemon.Options {
	state := c.String("state-dir")
	dataRoot := c.String("data-root")
	if dataRoot == "" {
		dataRoot = filepath.Join(state, "data")
	}
	confDir := c.String("cni-conf-dir")
	if confDir == "" {
		confDir = filepath.Join(state, "cni", "net.d")
	}
	return daemon.Options{
		Mount:          c.String("mount"),
		DatabaseURL:    c.String("database-url"),
		DataRoot:       dataRoot,
		AllowOther:     c.Bool("allow-other"),
		StopBotsOnExit: c.Bool("stop-bots-on-exit"),
		DebugFUSE:      c.Bool("debug-fuse"),
		DataBinds:      c.Bool("data-binds"),
		FollowSymlinks: c.Bool("follow-symlinks"),
		Pprof:          c.String("pprof"),
		Metrics:        c.String("metrics"),
		TrashKeep:      c.Duration("trash-keep"),
		NineP:          c.StringSlice("9p"),
		NinePTokenFile: c.String("9p-token-file"),
		NinePRemote:    c.Bool("9p-allow-remote"),
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

func serveAction(c *cli.Context) error {
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
	return daemon.Serve(context.Background(), o, logs.logger, func() { logs.reload(c) })
}
