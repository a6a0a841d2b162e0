// Command memohfs serves bots as a filesystem. This is the thin command
// layer: it parses flags (with MEMOHFS_* environment variables and a TOML
// config file behind them) into typed options and calls the packages that
// do the work: runtime, store, control, fsnodes, mount, internal/embedded.
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
