// Package ninep is memohfs's second face: the bot tree (internal/vtree)
// served over 9P2000.L, the dialect Linux's v9fs speaks, for VMs,
// containers without /dev/fuse, other machines and Plan 9 tools.
//
//	$ memohfs up --9p unix:/run/memohfs/9p.sock
//	$ mount -t 9p -o trans=unix,version=9p2000.L,access=client,cache=none,nosymfollow \
//	      /run/memohfs/9p.sock /mnt/memoh
//	$ echo start > /mnt/memoh/b1/ctl
//
// Every accepted connection gets its own p9 server bound to who is on the
// other end: on a unix socket the peer's uid and gid from SO_PEERCRED,
// never what the client claims in Tattach; on TCP the owner of the token
// file, once the client has sent the token (auth.go). Synthetic nodes are
// checked against that identity as the kernel checks a FUSE mount's modes
// (conn.go); data/ calls run with it through internal/creds, so the host
// kernel decides as for a local process (host.go).
//
// Blocking reads (events, cmd streams, wait) get the request's context
// from the patched library (internal/third_party/p9): a Tflush of the
// read, or the connection going away, ends the wait, and clunk ends what
// open began, as release does in FUSE.
package ninep
