package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
)

// serveLoopback is the anchor: go-fuse's own loopback with its defaults
// (as a user of the library gets it), serving SRC at MNT until SIGTERM.
func serveLoopback(args []string) {
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: bench loopback SRC MNT")
		os.Exit(2)
	}
	root, err := fs.NewLoopbackRoot(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	server, err := fs.Mount(args[1], root, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("mounted")
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sigs; server.Unmount() }()
	server.Wait()
}
