// Package store keeps memohfs records in Postgres: bots, their containers,
// snapshots, versions and lifecycle events. It uses a pgx v5 pool, applies
// its embedded schema migrations at open, and does every multi-row change
// in one transaction. It knows nothing of containerd or FUSE.
//
// Errors come in kinds (not found, already exists, invalid, unavailable)
// whose types carry the method sets of github.com/containerd/errdefs
// (NotFound(), AlreadyExists(), InvalidParameter(), Unavailable()), so
// control classifies store and runtime errors the same way without this
// package importing errdefs.
package store
