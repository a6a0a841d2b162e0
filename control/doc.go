// Package control owns what a bot may do and when: the ctl verb table
// (name, arguments, states allowed, handler), state transitions, per-bot
// locking, and reconciling Postgres records with the runtime. It speaks to
// the runtime and store packages and knows no FUSE types; fsnodes calls it.
//
// The verbs and reconcile land with the filesystem and daemon issues; the
// runtime and store they drive are in place.
package control
