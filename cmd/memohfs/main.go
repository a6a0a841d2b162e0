// Command memohfs serves bots as a filesystem. This is the thin command
// layer: one file per command, each with its flags (with MEMOHFS_*
// environment variables and a TOML config file behind them, flags.go), a
// function that turns them into a typed options struct (serveOptionsFrom,
// upOptionsFrom, ...) and an action that hands those to the package that
// does the work: internal/daemon for serve, up and check (it wires
// runtime, store, control, fsnodes, mount and internal/embedded),
// internal/cmdclient for exec, mount for umount, runtime/ociimage for
// image.
package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

func newApp() *cli.App {
	return &cli.App{
		Name:                 "memohfs",
		Usage:                "bots as a Plan 9 style filesystem over containerd",
		Version:              version,
		EnableBashCompletion: true,
		Commands: []*cli.Command{
			upCommand(),
			serveCommand(),
			umountCommand(),
			doctorCommand(),
			checkCommand(),
			execCommand(),
			dialCommand(),
			versionCommand(),
			imageCommand(),
			completionCommand(),
		},
	}
}

func main() {
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "memohfs:", err)
		os.Exit(1)
	}
}
