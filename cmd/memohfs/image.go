package main

import (
	"fmt"

	"github.com/memohfs/memohfs/runtime/ociimage"
	"github.com/urfave/cli/v2"
)

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
				opts := ociimage.Options{Name: c.String("name"), Busybox: c.String("busybox")}
				res, err := ociimage.WriteFile(c.String("out"), opts)
				if err != nil {
					return err
				}
				fmt.Fprintf(c.App.Writer, "%s %s (%d bytes) -> %s\n", res.Name, res.ManifestDigest, res.Size, c.String("out"))
				return nil
			},
		}},
	}
}
