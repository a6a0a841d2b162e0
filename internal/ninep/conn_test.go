package ninep_test

import (
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/hugelgupf/p9/p9"
	"github.com/memohfs/memohfs/control"
	"github.com/memohfs/memohfs/internal/ninep"
)

// TestToken9P: TCP is refused without a token file, off loopback
// without --9p-allow-remote, and a client that does not send the token
// first is cut off before any walk; one that does is served as the token
// file's owner.
func TestToken9P(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	must(t, os.WriteFile(tok, []byte("0123456789abcdef0123456789abcdef\n"), 0o600))
	var ctl *control.Controller // Listen fails before it uses the controller
	for _, tc := range []struct {
		what string
		o    ninep.Options
		want string
	}{
		{"no token file", ninep.Options{Listen: []string{"tcp:127.0.0.1:0"}}, "--9p-token-file"},
		{"not loopback", ninep.Options{Listen: []string{"tcp:0.0.0.0:0"}, TokenFile: tok}, "not a loopback"},
		{"a token anyone reads", ninep.Options{Listen: []string{"tcp:127.0.0.1:0"}, TokenFile: loose(t, dir)}, "chmod 600"},
		{"no transport", ninep.Options{Listen: []string{"/run/x.sock"}}, "unix:PATH"},
	} {
		if _, err := ninep.Listen(ctl, tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %q", tc.what, err, tc.want)
		}
	}

	n := newNP(t, ninep.Options{Listen: []string{"tcp:127.0.0.1:0"}, TokenFile: tok})
	addr := strings.TrimPrefix(n.srv.Addrs()[0], "tcp:")
	root := n.dial0(t)
	must(t, root.mkdir("/", "b1"))

	refused := func(what string, first []byte) {
		nc, err := net.Dial("tcp", addr)
		must(t, err)
		defer nc.Close()
		if first != nil {
			nc.Write(first)
		}
		c, err := p9.NewClient(nc)
		if err == nil {
			_, err = c.Attach("")
			c.Close()
		}
		if err == nil {
			t.Errorf("%s: served", what)
		}
	}
	refused("no token", nil)
	refused("a wrong token", ninep.TokenLine([]byte("0123456789abcdef0123456789abcdeX")))
	refused("the token as 9P", []byte("0123456789abcdef0123456789abcdef\n"))

	nc, err := net.Dial("tcp", addr)
	must(t, err)
	b, _ := os.ReadFile(tok)
	_, err = nc.Write(ninep.TokenLine(b))
	must(t, err)
	c := attach(t, nc, p9.NoUID)
	if st := c.mustRead("b1/status"); !strings.Contains(st, "name b1\n") {
		t.Fatalf("status over TCP:\n%s", st)
	}
}

// dial0 is a root client on the test's unix socket, when the stack
// serves TCP only: a second server on a socket.
func (n *np) dial0(t *testing.T) *client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "9p.sock")
	srv, err := ninep.Listen(n.Control, ninep.Options{Listen: []string{"unix:" + sock}})
	must(t, err)
	t.Cleanup(func() { srv.Close() })
	nc, err := dialAs(sock, 0)
	must(t, err)
	return attach(t, nc, p9.NoUID)
}

func loose(t *testing.T, dir string) string {
	p := filepath.Join(dir, "loose")
	must(t, os.WriteFile(p, []byte("0123456789abcdef0123456789abcdef"), 0o644))
	return p
}

// TestVanish9P: a client that goes away while a read of events waits
// leaves nothing behind: the read ends, the connection's goroutines and
// fds go. Five rounds, each counted.
func TestVanish9P(t *testing.T) {
	n := newNP(t, ninep.Options{})
	c := n.dial(t, 0, p9.NoUID)
	must(t, c.mkdir("/", "b1"))
	c.close()
	eventually(t, waitLong, "the first client is gone", func() bool { return n.srv.Conns() == 0 })
	baseG, baseFd := ninepGoroutines(), fds(t)
	hits := 0
	for round := 0; round < 5; round++ {
		nc, err := dialAs(n.sock, 0)
		must(t, err)
		cl, err := p9.NewClient(nc)
		must(t, err)
		root, err := cl.Attach("")
		must(t, err)
		_, f, err := root.Walk([]string{"b1", "events"})
		must(t, err)
		n.waitInEvents(t, f)
		hits++
		nc.Close() // the client vanishes; its library notices on its own
		eventually(t, waitLong, "the server let go of the connection", func() bool {
			return n.srv.Conns() == 0 && n.srv.Reading() == 0
		})
		cl.Close()
	}
	if hits != 5 {
		t.Fatalf("hit the waiting read %d times of 5", hits)
	}
	eventually(t, waitLong, "goroutines and fds back to where they were", func() bool {
		return ninepGoroutines() <= baseG && fds(t) <= baseFd
	})
}

// ninepGoroutines counts goroutines in the 9P server's code (the
// library's or this package's).
func ninepGoroutines() int {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "internal/ninep.") || strings.Contains(g, "hugelgupf/p9/p9.(*connState)") {
			n++
		}
	}
	return n
}

func fds(t *testing.T) int {
	es, err := os.ReadDir("/proc/self/fd")
	must(t, err)
	return len(es)
}
