// Command bench measures memohfs against the disk under it and against
// go-fuse's stock loopback of the same directory, in one run, interleaved,
// and prints a table (markdown) and a CSV: `make bench`.
//
//	go run ./internal/bench run [--runs 5] [--out results] [--quick]
//
// It starts a whole memohfs (`bin/memohfs up --allow-other`, also serving
// 9P on a unix socket in the work dir) on a state dir of its own, mounts
// the anchor (fs.NewLoopbackRoot of a dir of its own, with go-fuse's
// defaults plus allow_other) from a child process,
// runs every workload on the three targets in rotating order (native and
// the anchor's source each in a dir outside every bot's data dir, so
// memohfs's watcher sees nothing of their runs), and cleans up everything
// it started. The non-root row runs as uid 47001 (`bench create`, a child
// process) in dirs that user owns, on memohfs in a bot that user made.
package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "loopback" {
		serveLoopback(os.Args[2:])
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "create" {
		createAs(os.Args[2:])
		return
	}
	if len(os.Args) < 2 || os.Args[1] != "run" {
		fmt.Fprintln(os.Stderr, "usage: bench run [--runs N] [--out DIR] [--quick] | bench loopback SRC MNT | bench create ROOT N")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	o := options{}
	fs.IntVar(&o.Runs, "runs", 5, "runs of each workload on each target (medians are reported)")
	fs.StringVar(&o.Out, "out", "results", "where the CSV goes (a timestamped dir inside)")
	fs.StringVar(&o.Dir, "dir", "/var/tmp/memohfs-bench", "work dir (on the disk to measure)")
	fs.StringVar(&o.Binary, "memohfs", "bin/memohfs", "the memohfs binary")
	fs.BoolVar(&o.Quick, "quick", false, "smaller sizes and counts (a smoke run, not for the record)")
	fs.IntVar(&o.Bots, "bots", 1000, "bots for the control-plane scale rows (and the 9P root listing)")
	fs.StringVar(&o.Only, "only", "", "run only workloads whose name contains this (control: the control plane, 9P rows included; stat-visible: its bot-side append rows alone;\n"+
		"9p: the 9P-against-FUSE rows alone, after making --bots bots for the root listing)")
	fs.BoolVar(&o.Verbose, "v", false, "say more about each measure on stderr")
	fs.Parse(os.Args[2:])
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type options struct {
	Runs    int
	Out     string
	Dir     string
	Binary  string
	Quick   bool
	Bots    int
	Only    string
	Verbose bool
}
