package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// serveLoopback is the anchor: go-fuse's own loopback with its defaults
// (as a user of the library gets them from fs.Mount(dir, root, nil)),
// serving SRC at MNT until SIGTERM. The one option added is allow_other,
// so the non-root row can reach it: it changes which callers the kernel
// lets in, not how requests flow. The loopback checks no permissions
// (no default_permissions) and acts as root, so the bench keeps SRC under
// a dir only root can enter and the mount is nosuid,nodev.
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
	// fs.Mount's defaults for nil options, spelled out.
	second := time.Second
	opts := &fs.Options{EntryTimeout: &second, AttrTimeout: &second,
		MountOptions: fuse.MountOptions{MaxBackground: 12, AllowOther: true}}
	server, err := fs.Mount(args[1], root, opts)
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
