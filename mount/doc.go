// Package mount owns the mount point: it mounts FUSE with the new mount
// API, replacing a stale mount (a dead memohfs leaves one: stat says
// ENOTCONN) from beneath so the mount point is never bare, turns SIGINT and
// SIGTERM into a clean unmount (retried while the mount is busy, then a
// lazy unmount, within a bounded time), passes SIGHUP on for a reload, and
// unmounts on request (`memohfs umount`: DetachSubmounts takes the data/
// binds off first, then Unmount).
package mount
