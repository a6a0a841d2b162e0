package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hugelgupf/p9/p9"
	"github.com/memohfs/memohfs/internal/embedded"
	"github.com/memohfs/memohfs/internal/testenv"
)

// TestUp9P: `memohfs up --9p unix --9p tcp:127.0.0.1:0 --9p-token-file F`
// serves the tree on a 0660 root socket in up's run dir and on TCP
// behind the token; `memohfs dial` sends the token and hands the
// connection to a command as fd 3 (here this test binary, as a 9P
// client: what `mount -o trans=fd` gets).
func TestUp9P(t *testing.T) {
	state, mnt := upInstance(t)
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("a-token-of-32-bytes-or-so-123456\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startUp(t, state, mnt, "--9p", "unix", "--9p", "tcp:127.0.0.1:0", "--9p-token-file", tok)
	defer d.stop()
	run, err := embedded.RunDir(state)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(run, "9p.sock")
	var st syscall.Stat_t
	if err := syscall.Stat(sock, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o777 != 0o660 || st.Mode&syscall.S_IFMT != syscall.S_IFSOCK || st.Uid != 0 || st.Gid != 0 {
		t.Fatalf("%s: mode %o, uid %d, gid %d; want a 0660 socket of root's", sock, st.Mode, st.Uid, st.Gid)
	}
	sh(t, fmt.Sprintf("mkdir %[1]s/p9 && echo start > %[1]s/p9/ctl", mnt))
	defer sh(t, fmt.Sprintf("echo stop > %s/p9/ctl", mnt))
	fuse, err := os.ReadFile(filepath.Join(mnt, "p9", "status"))
	if err != nil {
		t.Fatal(err)
	}

	// Over the unix socket.
	nc, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	if got := statusOver(t, nc, "p9"); got != string(fuse) {
		t.Fatalf("status over 9P:\n%s\nover FUSE:\n%s", got, fuse)
	}

	// Over TCP, through `memohfs dial`.
	addr := tcpAddr(t, d.log)
	cmd := exec.Command(binary(t), "dial", "--token-file", tok, "tcp:"+addr, "--", os.Args[0])
	cmd.Env = append(os.Environ(), ninePChildEnv+"=p9")
	out, err := cmd.CombinedOutput()
	if err != nil || string(out) != string(fuse) {
		t.Fatalf("memohfs dial ... -- 9P client: %v\n%s\nwant\n%s", err, out, fuse)
	}
	// Without the token, dial is refused before any 9P.
	cmd = exec.Command(binary(t), "dial", "tcp:"+addr, "--", "true")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "token") {
		t.Fatalf("dial without a token: %v\n%s", err, out)
	}
}

// tcpAddr is the TCP address up logged it serves 9P on.
func tcpAddr(t *testing.T, log string) string {
	t.Helper()
	re := regexp.MustCompile(`tcp:(127\.0\.0\.1:\d+)`)
	var addr string
	testenv.Eventually(t, time.Minute, "up logs its 9P listeners", func() bool {
		b, _ := os.ReadFile(log)
		if m := re.FindSubmatch(b); m != nil {
			addr = string(m[1])
			return true
		}
		return false
	})
	return addr
}

// statusOver reads <bot>/status with a 9P client over nc.
func statusOver(t *testing.T, nc net.Conn, bot string) string {
	t.Helper()
	s, err := readStatus9P(nc, bot)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func readStatus9P(nc io.ReadWriteCloser, bot string) (string, error) {
	c, err := p9.NewClient(nc)
	if err != nil {
		return "", err
	}
	defer c.Close()
	root, err := c.Attach("")
	if err != nil {
		return "", err
	}
	defer root.Close()
	_, f, err := root.Walk([]string{bot, "status"})
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, _, err := f.Open(p9.ReadOnly); err != nil {
		return "", err
	}
	buf := make([]byte, 64<<10)
	n, err := f.ReadAt(buf, 0)
	if err != nil && err != io.EOF {
		return "", err
	}
	return string(buf[:n]), nil
}

// ninePChildEnv makes this test binary a 9P client on fd 3 that prints
// the named bot's status (TestMain).
const ninePChildEnv = "MEMOHFS_TEST_9P_CHILD"

func ninePChild(bot string) int {
	f := os.NewFile(3, "9p")
	nc, err := net.FileConn(f)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	s, err := readStatus9P(nc, bot)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Print(s)
	return 0
}
