package main

import (
	"fmt"
	"os"
	"time"

	"github.com/memohfs/memohfs/mount"
	"github.com/urfave/cli/v2"
)

func umountCommand() *cli.Command {
	return &cli.Command{
		Name:      "umount",
		Usage:     "unmount a memohfs mount; a busy one is detached lazily (and says so)",
		ArgsUsage: "DIR",
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "wait", Value: 3 * time.Second, Usage: "how long to retry a busy mount before the lazy unmount"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("usage: memohfs umount DIR")
			}
			dir := c.Args().First()
			// A dead or hung server (kill -9 can leave its process wedged
			// on its own mount): abort the connection, so nothing stays
			// stuck on it, and detach.
			if cleared, err := mount.ClearStale(dir); err != nil {
				return err
			} else if cleared {
				fmt.Fprintf(c.App.Writer, "%s: its server was gone or hung: connection aborted, mount detached\n", dir)
				return nil
			}
			// The data/ binds make a live mount busy: detached first.
			binds, err := mount.DetachSubmounts(dir)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
			}
			mode, err := mount.Unmount(dir, c.Duration("wait"))
			if err != nil {
				return err
			}
			switch mode {
			case mount.Clean:
				fmt.Fprintf(c.App.Writer, "%s: unmounted\n", dir)
				if binds > 0 {
					fmt.Fprintf(c.App.Writer, "%s: its %d data/ binds were detached first (a process inside one keeps it until it lets go)\n", dir, binds)
				}
			case mount.Lazy:
				fmt.Fprintf(c.App.Writer, "%s: busy: detached lazily; it goes when its last user lets go\n", dir)
			case mount.NotThere:
				return fmt.Errorf("%s: not mounted", dir)
			}
			return nil
		},
	}
}
