// Package mount owns the mount point: mounting and unmounting the FUSE
// server, clearing stale mounts (ENOTCONN) at start, and turning SIGINT and
// SIGTERM into a clean unmount with a lazy-unmount fallback.
//
// It lands with the daemon issue.
package mount
