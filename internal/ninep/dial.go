package ninep

import (
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// Dial connects to a 9P listener given as Listen takes it (unix:PATH or
// tcp:HOST:PORT) and, on TCP, sends the token from tokenFile first: what
// comes back is a connection that speaks 9P2000.L, for a Go client or,
// handed over as an fd, for the kernel's (mount -o trans=fd).
func Dial(addr, tokenFile string) (net.Conn, error) {
	network, a, ok := strings.Cut(addr, ":")
	if !ok || (network != "unix" && network != "tcp") {
		return nil, fmt.Errorf("%q: want unix:PATH or tcp:HOST:PORT", addr)
	}
	nc, err := net.DialTimeout(network, a, 10*time.Second)
	if err != nil {
		return nil, err
	}
	if network == "tcp" {
		if tokenFile == "" {
			nc.Close()
			return nil, fmt.Errorf("a TCP 9P listener wants its token: --token-file")
		}
		tok, err := os.ReadFile(tokenFile)
		if err != nil {
			nc.Close()
			return nil, err
		}
		if _, err := nc.Write(TokenLine(tok)); err != nil {
			nc.Close()
			return nil, err
		}
	}
	return nc, nil
}
