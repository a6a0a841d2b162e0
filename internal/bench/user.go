package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// userSuite is "create N x 4KiB as a non-root user": the create workload
// run by benchUID (a process of its own with that uid and gid and no
// supplementary groups) in a dir that user owns on each target. On
// memohfs that is data/ of a bot the user made itself, through the
// allow_other mount; on the stock loopback the loopback creates as root
// and chowns to the caller, as go-fuse's loopback does.
func userSuite(b *bench, t target) ([]metric, error) {
	n := b.sizes.Small
	root := filepath.Join(t.UserDir, "small")
	var stdout, stderr bytes.Buffer
	cmd := b.s.asUser(b.s.exe, "create", root, strconv.Itoa(n))
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("create as uid %d: %v: %s", benchUID, err, strings.TrimSpace(stderr.String()))
	}
	ns, err := strconv.ParseInt(strings.TrimSpace(stdout.String()), 10, 64)
	if err != nil || ns <= 0 {
		return nil, fmt.Errorf("create as uid %d: output %q", benchUID, stdout.String())
	}
	return []metric{{fmt.Sprintf("create %d x 4KiB as a non-root user", n), perSec(n, time.Duration(ns))}}, nil
}

// createAs is `bench create ROOT N`, run as benchUID: it times
// createTree, checks that what it made is its own (so the row measured a
// non-root caller), removes the tree, and prints the nanoseconds the
// create took. Any failure exits non-zero.
func createAs(args []string) {
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: bench create ROOT N")
		os.Exit(2)
	}
	root := args[0]
	n, err := strconv.Atoi(args[1])
	if err == nil && n < 1 {
		err = errors.New("the file count N must be at least 1")
	}
	if err == nil && os.Geteuid() == 0 {
		err = errors.New("run as root: the row is for a non-root user")
	}
	var d time.Duration
	if err == nil {
		d, err = timed(func() error { return createTree(root, n) })
	}
	if err == nil {
		var st syscall.Stat_t
		last := filepath.Join(root, fmt.Sprintf("d%02d", (n-1)/1000), fmt.Sprintf("f%05d", n-1))
		err = syscall.Lstat(last, &st)
		if err == nil && (st.Uid != uint32(os.Geteuid()) || st.Gid != uint32(os.Getegid()) || st.Size != 4096) {
			err = fmt.Errorf("%s: uid %d gid %d size %d, want %d %d 4096", last, st.Uid, st.Gid, st.Size, os.Geteuid(), os.Getegid())
		}
	}
	if rerr := os.RemoveAll(root); err == nil {
		err = rerr
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(d.Nanoseconds())
}
