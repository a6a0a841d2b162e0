// Package embedded runs the daemons memohfs can bring along on one
// machine: a private containerd and a private Postgres cluster, each with
// all of its state under one directory. `memohfs up` uses it; so does the
// test harness.
//
// A daemon is recorded in a pid file as "<pid> <start time>" (the start
// time from /proc makes a recycled pid harmless). Starting finds a daemon
// of the same directory still running (the memohfs that started it was
// killed) and adopts it instead of starting a second one. Only processes
// recorded this way are ever signalled.
package embedded
