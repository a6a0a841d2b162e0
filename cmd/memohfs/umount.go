package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/memohfs/memohfs/mount"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
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
			// The data/ binds on a live mount make it busy (the
			// daemon holds each one's fd, so none unmounts plainly):
			// they are detached first.
			binds := detachSubmounts(dir)
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

// detachSubmounts detaches (lazily) each mount right on the memohfs mount
// at dir: the data/ binds memohfs put there. It says how many it
// detached. Their paths are walked through memohfs's own nodes only: a
// mount below one of them (inside a bot's data, a path the bot controls)
// is never named; it goes with its parent.
func detachSubmounts(dir string) int {
	dir = filepath.Clean(dir)
	all, err := mount.Submounts(dir)
	if err != nil {
		return 0
	}
	var below []string
	for _, m := range all {
		if m.MountPoint != dir {
			below = append(below, m.MountPoint)
		}
	}
	isMount := map[string]bool{}
	for _, mp := range below {
		isMount[mp] = true
	}
	n := 0
	for _, mp := range below {
		top := true
		for p := filepath.Dir(mp); p != dir && len(p) > len(dir); p = filepath.Dir(p) {
			if isMount[p] {
				top = false
				break
			}
		}
		if !top {
			continue
		}
		if err := unix.Unmount(mp, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err == nil {
			n++
		} else if !errors.Is(err, unix.EINVAL) {
			fmt.Fprintf(os.Stderr, "detach %s: %v\n", mp, err)
		}
	}
	return n
}
