package main

import (
	"fmt"
	"os"
	"os/exec"

	"github.com/memohfs/memohfs/internal/ninep"
	"github.com/urfave/cli/v2"
)

// dialCommand connects to a 9P listener (sending the token first on TCP)
// and runs a command with the connection as fd 3: the way a kernel
// mounts a TCP listener, whose token v9fs cannot send itself.
//
//	$ memohfs dial --token-file ~/.memohfs-token tcp:127.0.0.1:5640 -- \
//	    mount -t 9p -o trans=fd,rfdno=3,wfdno=3,version=9p2000.L,access=client,nosymfollow memohfs /mnt/memoh
func dialCommand() *cli.Command {
	return &cli.Command{
		Name:      "dial",
		Usage:     "connect to a 9P listener (--9p), sending the token on TCP, and run COMMAND with the connection as fd 3",
		ArgsUsage: "unix:PATH|tcp:HOST:PORT -- COMMAND [ARG...]",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "token-file", Usage: "the token a TCP listener wants (the server's --9p-token-file)", EnvVars: env("token-file")},
		},
		Action: func(c *cli.Context) error {
			args := c.Args().Slice()
			if len(args) > 1 && args[1] == "--" {
				args = append(args[:1], args[2:]...)
			}
			if len(args) < 2 {
				return fmt.Errorf("usage: memohfs dial ADDR -- COMMAND [ARG...]")
			}
			nc, err := ninep.Dial(args[0], c.String("token-file"))
			if err != nil {
				return err
			}
			f, err := nc.(interface{ File() (*os.File, error) }).File()
			nc.Close()
			if err != nil {
				return err
			}
			cmd := exec.Command(args[1], args[2:]...)
			cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
			cmd.ExtraFiles = []*os.File{f} // fd 3
			if err := cmd.Run(); err != nil {
				if ee, ok := err.(*exec.ExitError); ok {
					return cli.Exit("", ee.ExitCode())
				}
				return err
			}
			return nil
		},
	}
}
