package main

import (
	"fmt"
	goruntime "runtime"
	"runtime/debug"

	"github.com/memohfs/memohfs/runtime/ociimage"
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

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script (bash or zsh): source <(memohfs completion bash)",
		ArgsUsage: "bash|zsh",
		Action: func(c *cli.Context) error {
			switch c.Args().First() {
			case "bash", "":
				fmt.Fprint(c.App.Writer, bashCompletion)
			case "zsh":
				fmt.Fprint(c.App.Writer, zshCompletion)
			default:
				return fmt.Errorf("completion: bash or zsh, not %q", c.Args().First())
			}
			return nil
		},
	}
}

// The scripts call memohfs --generate-bash-completion (urfave/cli's hook).
const bashCompletion = `_memohfs() {
  local cur opts
  cur="${COMP_WORDS[COMP_CWORD]}"
  if [[ "$cur" == -* ]]; then
    opts=$("${COMP_WORDS[@]:0:$COMP_CWORD}" ${cur} --generate-bash-completion 2>/dev/null)
  else
    opts=$("${COMP_WORDS[@]:0:$COMP_CWORD}" --generate-bash-completion 2>/dev/null)
  fi
  COMPREPLY=($(compgen -W "${opts}" -- "${cur}"))
}
complete -o bashdefault -o default -F _memohfs memohfs
`

const zshCompletion = `#compdef memohfs
_memohfs() {
  local -a opts
  opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion 2>/dev/null)}")
  _describe 'values' opts
}
compdef _memohfs memohfs
`
