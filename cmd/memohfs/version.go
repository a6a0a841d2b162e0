package main

import (
	"fmt"
	goruntime "runtime"
	"runtime/debug"

	"github.com/urfave/cli/v2"
)

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the versions of memohfs and of what it was built with",
		Action: func(c *cli.Context) error {
			fmt.Fprintf(c.App.Writer, "memohfs %s\n", version)
			fmt.Fprintf(c.App.Writer, "go %s %s/%s\n", goruntime.Version(), goruntime.GOOS, goruntime.GOARCH)
			if bi, ok := debug.ReadBuildInfo(); ok {
				for _, d := range bi.Deps {
					switch d.Path {
					case "github.com/containerd/containerd/v2", "github.com/hanwen/go-fuse/v2",
						"github.com/jackc/pgx/v5", "github.com/containerd/go-cni":
						fmt.Fprintf(c.App.Writer, "%s %s\n", d.Path, d.Version)
					}
				}
			}
			return nil
		},
	}
}
