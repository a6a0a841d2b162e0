package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/memohfs/memohfs/internal/cmdclient"
	"github.com/urfave/cli/v2"
)

// execCommand is `memohfs exec`: a client of the bot's cmd/ files
// (internal/cmdclient), exiting with the command's status.
func execCommand() *cli.Command {
	return &cli.Command{
		Name:      "exec",
		Usage:     "run a command in a bot through its cmd/ files; exits with its status (128+N for signal N)",
		ArgsUsage: "BOT -- CMD [ARG...]",
		Description: `Copies stdin to the command (then closes it), its stdout and stderr to
   ours. SIGINT and SIGTERM go to every process of the command; a second one
   kills them. As an MCP server command:
     {"command": "memohfs", "args": ["exec", "mybot", "--", "/data/my-mcp-server"]}
   Exit statuses of its own: 125 (could not run it), 126 (cannot be run),
   127 (no such command or dir).`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "mount", Value: "/memoh", Usage: "the memohfs mount", EnvVars: env("mount")},
			&cli.StringFlag{Name: "dir", Usage: "working dir in the bot (default /data)"},
			&cli.StringSliceFlag{Name: "env", Usage: "KEY=VALUE for the command (repeatable)"},
		},
		Action: func(c *cli.Context) error {
			args := c.Args().Slice()
			if len(args) > 1 && args[1] == "--" {
				args = append(args[:1], args[2:]...)
			}
			if len(args) < 2 {
				return cli.Exit("usage: memohfs exec [--mount DIR] [--dir D] [--env K=V]... BOT -- CMD [ARG...]", cmdclient.ExitFailed)
			}
			sigs := make(chan os.Signal, 2)
			signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
			defer signal.Stop(sigs)
			code, err := cmdclient.Run(c.Context, cmdclient.Options{
				Mount: c.String("mount"), Bot: args[0], Dir: c.String("dir"), Env: c.StringSlice("env"), Args: args[1:],
				Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Signals: sigs,
			})
			if err != nil {
				var ce *cmdclient.Error
				if errors.As(err, &ce) {
					code = ce.Code
				}
				fmt.Fprintln(os.Stderr, "memohfs exec:", err)
			}
			if code != 0 {
				return cli.Exit("", code)
			}
			return nil
		},
	}
}
