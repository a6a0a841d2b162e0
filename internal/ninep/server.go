package ninep

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hugelgupf/p9/p9"
	"github.com/memohfs/memohfs/control"
	"github.com/memohfs/memohfs/internal/creds"
	"github.com/memohfs/memohfs/internal/vtree"
	"golang.org/x/sys/unix"
)

// Options shape the 9P face.
type Options struct {
	// Listen are the addresses: unix:PATH or tcp:HOST:PORT.
	Listen []string
	// TokenFile holds the secret a TCP client sends first (auth.go); TCP
	// is refused without one.
	TokenFile string
	// AllowRemote lets a TCP listener bind a non-loopback address.
	AllowRemote bool
	// SocketGroup is the gid a unix socket is given (mode 0660); 0: root.
	SocketGroup int
	// DataPath says how a bot's data/ is served (for status); nil: fuse.
	DataPath func(bot string) string
	Logger   *slog.Logger
}

// Server serves the tree on its listeners until Close.
type Server struct {
	c          *control.Controller
	opts       Options
	log        *slog.Logger
	life       context.Context
	end        context.CancelFunc
	root       *vtree.Root
	pool       *creds.Pool
	token      []byte
	tokenOwner vtree.Caller

	reading atomic.Int64 // reads of synthetic files being served

	mu        sync.Mutex
	listeners []net.Listener
	conns     map[*conn]struct{}
	wg        sync.WaitGroup
}

// credThreads is how many OS threads run data/ calls as their callers.
const credThreads = 8

// Listen opens every listener of o and serves them. A bad address, a TCP
// listener without a token file, or a remote address without
// AllowRemote fails the whole call and leaves nothing open.
func Listen(c *control.Controller, o Options) (*Server, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	s := &Server{c: c, opts: o, log: o.Logger, conns: map[*conn]struct{}{}, pool: creds.NewPool(credThreads)}
	s.life, s.end = context.WithCancel(context.Background())
	s.root = vtree.NewRoot(c, s.life)
	s.root.DataPath = o.DataPath
	for _, spec := range o.Listen {
		l, err := s.listen(spec)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("--9p %s: %w", spec, err)
		}
		s.listeners = append(s.listeners, l)
	}
	for _, l := range s.listeners {
		s.wg.Add(1)
		go s.accept(l)
	}
	return s, nil
}

// Addrs are the addresses served, as given to Listen (a tcp port 0 is
// the one the kernel picked).
func (s *Server) Addrs() []string {
	var out []string
	for _, l := range s.listeners {
		a := l.Addr()
		out = append(out, a.Network()+":"+a.String())
	}
	return out
}

func (s *Server) listen(spec string) (net.Listener, error) {
	network, addr, ok := strings.Cut(spec, ":")
	switch {
	case !ok || addr == "":
		return nil, errors.New("want unix:PATH or tcp:HOST:PORT")
	case network == "unix":
		return listenUnix(addr, s.opts.SocketGroup)
	case network == "tcp":
		if s.opts.TokenFile == "" {
			return nil, errors.New("a TCP listener needs --9p-token-file (the client proves the token before any walk)")
		}
		if err := s.loadToken(); err != nil {
			return nil, err
		}
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if !s.opts.AllowRemote && !loopback(host) {
			return nil, fmt.Errorf("%s is not a loopback address: 9P is not encrypted; tunnel it (ssh -L, WireGuard) or pass --9p-allow-remote", host)
		}
		return net.Listen("tcp", addr)
	}
	return nil, fmt.Errorf("unknown transport %q: want unix:PATH or tcp:HOST:PORT", network)
}

// loopback says whether host names only this machine.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// listenUnix binds path with mode 0660 (root and gid), replacing a stale
// socket (one nothing answers on) but never another file.
func listenUnix(path string, gid int) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s: another server answers on it", path)
		}
		os.Remove(path) // stale: its server died
	}
	// The socket is made 0660 from its first instant: the umask decides
	// the mode bind gives it.
	old := unix.Umask(0o117)
	l, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, err
	}
	if err := os.Chown(path, 0, gid); err != nil {
		l.Close()
		return nil, err
	}
	l.(*net.UnixListener).SetUnlinkOnClose(true)
	return l, nil
}

func (s *Server) accept(l net.Listener) {
	defer s.wg.Done()
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.life.Err() == nil && !errors.Is(err, net.ErrClosed) {
				s.log.Warn("9p accept", "err", err)
			}
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serve(nc)
		}()
	}
}

// serve runs one connection: who the peer is, then its own p9 server.
func (s *Server) serve(nc net.Conn) {
	who, err := s.identify(nc)
	if err != nil {
		s.log.Info("9p connection refused", "remote", nc.RemoteAddr().String(), "err", err)
		nc.Close()
		return
	}
	k := s.newConn(nc, who)
	if k == nil {
		return
	}
	defer s.dropConn(k)
	srv := p9.NewServer(&attacher{k: k}, p9.WithServerLogger(discard{}))
	srv.Handle(nc, nc)
}

// Close stops listening, ends every connection (their blocked reads are
// answered) and waits for them. A nil Server closes nothing.
func (s *Server) Close() error {
	if s == nil {
		return nil
	}
	s.end()
	for _, l := range s.listeners {
		l.Close()
	}
	s.mu.Lock()
	for k := range s.conns {
		k.nc.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// Conns is how many connections are being served.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Reading is how many reads of synthetic files are being served now: a
// read waiting at the end of events, or on a command's output, counts
// until it ends.
func (s *Server) Reading() int { return int(s.reading.Load()) }

// discard is the p9 library's logger: memohfs logs connections itself.
type discard struct{}

func (discard) Printf(string, ...any) {}
func (discard) Print(...any)          {}
