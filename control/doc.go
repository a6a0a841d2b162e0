// Package control owns what a bot may do and when: the ctl verb table
// (name, arguments, handler, one line of help), state transitions, one
// operation at a time per bot, the live state that status shows (kept from
// runtime events, so reading it costs no containerd round trip), the data/
// side of snapshots, and the bookkeeping that keeps Postgres and the
// runtime in step. It drives the runtime and store packages and knows no
// FUSE types: fsnodes calls it and maps its error kinds to errno.
package control
