package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/memohfs/memohfs/internal/doctor"
	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"
)

func doctorCommand() *cli.Command {
	return withConfig(&cli.Command{
		Name:  "doctor",
		Usage: "check what memohfs needs on this machine; prints a table with a fix for each failure",
		Flags: []cli.Flag{
			str("cni-bin-dir", "/usr/lib/cni:/opt/cni/bin", "CNI plugin dirs, colon separated"),
			str("containerd-address", "/run/containerd/containerd.sock", "containerd to check (serve)"),
			str("database-url", "", "Postgres to check (serve)"),
			str("containerd-bin", "", "dir with containerd binaries (up)"),
			boolf("serve", "also require the containerd and Postgres that `serve` connects to"),
			str("9p-socket", "/run/memohfs/9p.sock", "the 9P socket (--9p unix:PATH) the mount hint names"),
			altsrc.NewIntFlag(&cli.IntFlag{Name: "bots", Value: 10, EnvVars: env("bots"),
				Usage: "how many bots this host serves at once (sizes the inotify checks)"}),
		},
		Action: doctorAction,
	})
}

// doctorOptionsFrom is what doctor checks against, from its flags.
func doctorOptionsFrom(c *cli.Context) doctor.Options {
	return doctor.Options{
		CNIBinDirs:        splitPath(c.String("cni-bin-dir")),
		ContainerdAddress: c.String("containerd-address"),
		DatabaseURL:       c.String("database-url"),
		ContainerdBin:     c.String("containerd-bin"),
		RequireServe:      c.Bool("serve"),
		Bots:              c.Int("bots"),
		NinePSocket:       c.String("9p-socket"),
	}
}

func doctorAction(c *cli.Context) error {
	checks := doctor.Run(c.Context, doctorOptionsFrom(c))
	w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "CHECK\tSTATUS\tDETAIL\tFIX")
	failed := 0
	for _, ch := range checks {
		if ch.Failed() {
			failed++
		}
		fix := ch.Fix
		if ch.OK {
			fix = ""
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", ch.Name, ch.Status(), shorten(ch.Detail, 70), fix)
	}
	w.Flush()
	if failed > 0 {
		return cli.Exit(fmt.Sprintf("doctor: %d needed check(s) failed", failed), 1)
	}
	return nil
}

// shorten cuts s to n bytes, the last three "...", for the table.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
