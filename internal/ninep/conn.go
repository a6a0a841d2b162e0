package ninep

import (
	"context"
	"errors"
	"net"

	"github.com/memohfs/memohfs/internal/creds"
	"github.com/memohfs/memohfs/internal/vtree"
	"golang.org/x/sys/unix"
)

// conn is one accepted connection: its peer's identity, fixed for its
// life, and a context that ends with it.
type conn struct {
	s    *Server
	nc   net.Conn
	who  vtree.Caller
	cred creds.Cred // who, with the supplementary groups read at accept
	// ctx carries who and ends with the connection or the server: calls
	// the library gives no request context (walk, open, mkdir) use it.
	ctx    context.Context
	cancel context.CancelFunc
}

// identify says who is on the other end of nc: SO_PEERCRED on a unix
// socket; the token file's owner on TCP, once the peer sent the token.
func (s *Server) identify(nc net.Conn) (vtree.Caller, error) {
	switch c := nc.(type) {
	case *net.UnixConn:
		return peerCred(c)
	case *net.TCPConn:
		if err := s.checkToken(nc); err != nil {
			return vtree.Caller{}, err
		}
		return s.tokenOwner, nil
	}
	return vtree.Caller{}, errors.New("unknown transport")
}

// peerCred reads the peer's credentials as the kernel recorded them at
// connect: what the client says later (Tattach's uid) changes nothing.
func peerCred(c *net.UnixConn) (vtree.Caller, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return vtree.Caller{}, err
	}
	var uc *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		uc, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return vtree.Caller{}, err
	}
	if serr != nil {
		return vtree.Caller{}, serr
	}
	return vtree.Caller{Uid: uc.Uid, Gid: uc.Gid, Pid: uint32(uc.Pid)}, nil
}

func (s *Server) newConn(nc net.Conn, who vtree.Caller) *conn {
	k := &conn{s: s, nc: nc, who: who, cred: creds.Caller(who.Pid, who.Uid, who.Gid, 0)}
	k.ctx, k.cancel = context.WithCancel(vtree.WithCaller(s.life, who))
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.life.Err() != nil {
		nc.Close()
		return nil
	}
	s.conns[k] = struct{}{}
	return k
}

func (s *Server) dropConn(k *conn) {
	k.cancel()
	k.nc.Close()
	s.mu.Lock()
	delete(s.conns, k)
	s.mu.Unlock()
}

// reqCtx is the context of one request: the library's (ended by a Tflush
// of it, or the connection's end) with the caller, and ended with the
// server too.
func (k *conn) reqCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(vtree.WithCaller(ctx, k.who))
	stop := context.AfterFunc(k.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

// asCaller runs fn with the peer's credentials (internal/creds): the
// host kernel checks and applies them as for a local process. Root's
// calls run on the request's own thread.
func (k *conn) asCaller(fn func() error) error {
	if k.who.Uid == 0 {
		return fn()
	}
	return k.s.pool.Run(k.cred, fn)
}

// may says whether the peer may do want (4 read, 2 write, 1 search) to
// a synthetic node of attributes a: the rule the kernel applies to the
// FUSE mount's modes (default_permissions), root passing every check.
func (k *conn) may(a vtree.Attr, want uint32) bool {
	if k.who.Uid == 0 {
		return true
	}
	perm := a.Mode & 0o777
	switch {
	case a.Uid == k.who.Uid:
		perm >>= 6
	case k.inGroup(a.Gid):
		perm >>= 3
	}
	return perm&want == want
}

func (k *conn) inGroup(gid uint32) bool {
	if gid == k.who.Gid {
		return true
	}
	for _, g := range k.cred.Groups {
		if g == gid {
			return true
		}
	}
	return false
}
