package ninep

import (
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/memohfs/memohfs/internal/vtree"
)

// TCP connections prove a shared secret before any 9P message: the first
// line the client sends is
//
//	memohfs-token <token>\n
//
// and then 9P2000.L. Tattach's aname is no place for it (it shows in
// /proc/mounts), and v9fs does no Tauth. The token file's owner is who a
// TCP peer is: data/ calls run as that uid. `memohfs dial` sends the
// line and hands the connection to mount (trans=fd).
const tokenPrefix = "memohfs-token "

// tokenWait bounds how long a TCP peer may take to send its token.
const tokenWait = 10 * time.Second

// loadToken reads the token file: 16 bytes or more, readable by its
// owner only.
func (s *Server) loadToken() error {
	if s.token != nil {
		return nil
	}
	f, err := os.Open(s.opts.TokenFile)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%s is mode %o: a token file must be readable by its owner only (chmod 600)", s.opts.TokenFile, fi.Mode().Perm())
	}
	b := make([]byte, 4096)
	n, _ := f.Read(b)
	tok := bytes.TrimSpace(b[:n])
	if len(tok) < 16 {
		return fmt.Errorf("%s: a token must be 16 bytes or more (head -c 32 /dev/urandom | base64)", s.opts.TokenFile)
	}
	st := fi.Sys().(*syscall.Stat_t)
	s.token = tok
	s.tokenOwner = vtree.Caller{Uid: st.Uid, Gid: st.Gid}
	return nil
}

// checkToken reads the peer's first line and compares it with the token
// in constant time.
func (s *Server) checkToken(nc net.Conn) error {
	nc.SetReadDeadline(time.Now().Add(tokenWait))
	defer nc.SetReadDeadline(time.Time{})
	// One byte at a time: nothing past the line may be read away from
	// the 9P server that reads nc next.
	var line []byte
	b := make([]byte, 1)
	for len(line) < 4096 && (len(line) == 0 || line[len(line)-1] != '\n') {
		if _, err := nc.Read(b); err != nil {
			return fmt.Errorf("no token line: %w", err)
		}
		line = append(line, b[0])
	}
	got, ok := bytes.CutPrefix(bytes.TrimRight(line, "\r\n"), []byte(tokenPrefix))
	if !ok || subtle.ConstantTimeCompare(got, s.token) != 1 {
		return errors.New("wrong token")
	}
	return nil
}

// TokenLine is what a TCP client sends first.
func TokenLine(token []byte) []byte {
	return append(append([]byte(tokenPrefix), bytes.TrimSpace(token)...), '\n')
}
