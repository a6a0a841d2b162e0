package main

import (
	"context"
	"os"

	"github.com/memohfs/memohfs/internal/daemon"
	"github.com/memohfs/memohfs/mount"
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
		Flags:  append(flags, commonFlags()...),
		Action: upAction,
	})
}

// upOptionsFrom is up's own flags, and what it serves with from the
// flags it shares with serve (serveOptionsFrom; daemon.Up puts what it
// runs itself over those).
func upOptionsFrom(c *cli.Context) daemon.UpOptions {
	return daemon.UpOptions{
		StateDir:      c.String("state-dir"),
		ContainerdBin: c.String("containerd-bin"),
		PostgresBin:   c.String("postgres-bin"),
		Serve:         serveOptionsFrom(c),
		Stderr:        c.App.ErrWriter,
	}
}

func upAction(c *cli.Context) error {
	sigs := mount.Trap()
	logs, err := newLogging(c, os.Stderr)
	if err != nil {
		return err
	}
	o := upOptionsFrom(c)
	o.Serve.Signals = sigs
	return daemon.Up(context.Background(), o, logs.logger, func() { logs.reload(c) })
}
