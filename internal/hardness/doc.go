// Package hardness holds the tests that prove memohfs loses nothing, leaks
// nothing and lets nobody through: faults (containerd restarts, Postgres
// outages), load (many concurrent ctl writers), escapes tried from inside
// bots and through the mount, isolation between users, and resource
// hygiene. They run the real stack: containerd, runc, CNI, Postgres and a
// FUSE mount. Crash tests that kill the daemon itself live with the
// command (cmd/memohfs), which they run as a process.
//
// MEMOHFS_SOAK=1 (make soak) runs the same tests with larger counts.
package hardness
