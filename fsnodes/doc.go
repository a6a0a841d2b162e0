// Package fsnodes is the FUSE face of memohfs: small go-fuse node types
// (the root, bot directories, ctl/status/err/events/log files, the data/
// passthrough, skills/ and snapshots/) that translate file operations into
// control calls and errno. It holds no business rules.
//
// The tree lands with the filesystem issue.
package fsnodes
