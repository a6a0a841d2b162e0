// Command memohfs serves bots as a filesystem. This is the thin command
// layer: it parses flags into typed options and calls the packages that do
// the work (runtime, store, control, fsnodes, mount).
package main

import (
	"fmt"
	"os"
	goruntime "runtime"
	"runtime/debug"

	"github.com/memohfs/memohfs/runtime/ociimage"
	"github.com/urfave/cli/v2"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	app := &cli.App{
		Name:                 "memohfs",
		Usage:                "a Plan 9 style filesystem over containerd bots",
		Version:              version,
		EnableBashCompletion: true,
		Commands: []*cli.Command{
			versionCommand(),
			imageCommand(),
		},
	}
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "memohfs:", err)
		os.Exit(1)
	}
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print versions of memohfs and what it was built with",
		Action: func(c *cli.Context) error {
			fmt.Fprintf(c.App.Writer, "memohfs %s\n", version)
			fmt.Fprintf(c.App.Writer, "go %s %s/%s\n", goruntime.Version(), goruntime.GOOS, goruntime.GOARCH)
			if bi, ok := debug.ReadBuildInfo(); ok {
				for _, d := range bi.Deps {
					switch d.Path {
					case "github.com/containerd/containerd/v2", "github.com/hanwen/go-fuse/v2", "github.com/jackc/pgx/v5", "github.com/containerd/go-cni":
						fmt.Fprintf(c.App.Writer, "%s %s\n", d.Path, d.Version)
					}
				}
			}
			return nil
		},
	}
}

// imageOptions are the typed options of `memohfs image build`.
type imageOptions struct {
	Out string
	ociimage.Options
}

func imageCommand() *cli.Command {
	return &cli.Command{
		Name:  "image",
		Usage: "the default bot image",
		Subcommands: []*cli.Command{{
			Name:  "build",
			Usage: "write the default bot image (busybox-static) as a reproducible OCI layout tar",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Usage: "output file", Required: true},
				&cli.StringFlag{Name: "name", Value: ociimage.DefaultName, Usage: "image reference to store it under"},
				&cli.StringFlag{Name: "busybox", Value: "/bin/busybox", Usage: "static busybox binary"},
			},
			Action: func(c *cli.Context) error {
				opts := imageOptions{Out: c.String("out"), Options: ociimage.Options{Name: c.String("name"), Busybox: c.String("busybox")}}
				res, err := ociimage.WriteFile(opts.Out, opts.Options)
				if err != nil {
					return err
				}
				fmt.Fprintf(c.App.Writer, "%s %s (%d bytes) -> %s\n", res.Name, res.ManifestDigest, res.Size, opts.Out)
				return nil
			},
		}},
	}
}
