// Package fsnodes is the FUSE face of memohfs: small go-fuse node types
// for the tree
//
//	/M/<bot>/{ctl,status,err,events,log,data/,skills/,snapshots/,cmd/}
//
// that turn file operations into control calls and control's error kinds
// into errno. It holds no business rules: what a write to ctl does, and
// whether it may, is control's.
//
// data/, skills/ and the snapshot views are trees (see tree): host
// directories served through fd-relative, no-follow system calls, with
// kernel passthrough for open files where the kernel allows it, and
// kernel caches invalidated from inotify when the bot changes files
// behind the mount's back.
package fsnodes
