package ninep_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"github.com/memohfs/memohfs/internal/ninep"
	"github.com/memohfs/memohfs/internal/testenv"
	"github.com/memohfs/memohfs/internal/teststack"
	"golang.org/x/sys/unix"
)

// np is one test's stack (teststack: runtime, store, controller, FUSE
// mount) with the 9P face served on a unix socket beside the mount.
type np struct {
	*teststack.Stack
	srv  *ninep.Server
	sock string
}

func newNP(t *testing.T, o ninep.Options) *np {
	t.Helper()
	s := teststack.New(t, teststack.Options{})
	sock := filepath.Join(s.Env.TempDir(t), "9p.sock")
	if o.Listen == nil {
		o.Listen = []string{"unix:" + sock}
	}
	o.DataPath = s.FS.DataPath
	srv, err := ninep.Listen(s.Control, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return &np{Stack: s, srv: srv, sock: sock}
}

// client is a 9P2000.L client (the library's) on its own connection.
type client struct {
	t    *testing.T
	nc   net.Conn
	c    *p9.Client
	root p9.File
}

// dial connects to the unix socket as uid (the connecting thread's
// effective uid, which SO_PEERCRED records) and attaches claiming
// claimUID in Tattach.
func (n *np) dial(t *testing.T, uid uint32, claim p9.UID) *client {
	t.Helper()
	nc, err := dialAs(n.sock, uid)
	if err != nil {
		t.Fatal(err)
	}
	return attach(t, nc, claim)
}

func attach(t *testing.T, nc net.Conn, claim p9.UID) *client {
	t.Helper()
	c, err := p9.NewClient(nc)
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	root, err := c.AttachAs("", claim)
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	cl := &client{t: t, nc: nc, c: c, root: root}
	t.Cleanup(cl.close)
	return cl
}

func (c *client) close() {
	c.root.Close()
	c.c.Close()
}

// dialAs connects with the calling thread's euid switched to uid for the
// connect (per thread, raw: Go's Setuid would switch every thread).
func dialAs(path string, uid uint32) (net.Conn, error) {
	if uid == 0 {
		return net.Dial("unix", path)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(uid), ^uintptr(0)); e != 0 {
		return nil, e
	}
	defer unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), 0, ^uintptr(0))
	return net.Dial("unix", path)
}

func split(path string) []string {
	path = strings.Trim(path, "/")
	if path == "" {
		return nil
	}
	return strings.Split(path, "/")
}

// walk gives a fid of path, or the error.
func (c *client) walk(path string) (p9.File, error) {
	_, f, err := c.root.Walk(split(path))
	return f, err
}

// read reads the whole of path.
func (c *client) read(path string) (string, error) {
	f, err := c.walk(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, _, err := f.Open(p9.ReadOnly); err != nil {
		return "", err
	}
	var out bytes.Buffer
	buf := make([]byte, 64<<10)
	for off := int64(0); ; {
		n, err := f.ReadAt(buf, off)
		out.Write(buf[:n])
		off += int64(n)
		if n == 0 || errors.Is(err, io.EOF) {
			return out.String(), nil
		}
		if err != nil {
			return out.String(), err
		}
	}
}

func (c *client) mustRead(path string) string {
	c.t.Helper()
	s, err := c.read(path)
	if err != nil {
		c.t.Fatalf("read %s: %v", path, err)
	}
	return s
}

// write writes data to path (opened write-only with O_TRUNC, as `echo >`
// does).
func (c *client) write(path, data string) error {
	f, err := c.walk(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, _, err := f.Open(p9.WriteOnly | p9.OpenFlags(unix.O_TRUNC)); err != nil {
		return err
	}
	_, err = f.WriteAt([]byte(data), 0)
	return err
}

func (c *client) mustWrite(path, data string) {
	c.t.Helper()
	if err := c.write(path, data); err != nil {
		c.t.Fatalf("write %q to %s: %v", data, path, err)
	}
}

// mkdir makes name in dir.
func (c *client) mkdir(dir, name string) error {
	f, err := c.walk(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.Mkdir(name, 0o755, p9.NoUID, p9.NoGID)
	return err
}

func (c *client) rmdir(dir, name string) error {
	f, err := c.walk(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.UnlinkAt(name, unix.AT_REMOVEDIR)
}

// renameAt renames oldDir/oldName to newDir/newName (Trenameat).
func (c *client) renameAt(oldDir, oldName, newDir, newName string) error {
	od, err := c.walk(oldDir)
	if err != nil {
		return err
	}
	defer od.Close()
	nd, err := c.walk(newDir)
	if err != nil {
		return err
	}
	defer nd.Close()
	return od.RenameAt(oldName, nd, newName)
}

// link gives target the name dir/name too (Tlink).
func (c *client) link(target, dir, name string) error {
	tf, err := c.walk(target)
	if err != nil {
		return err
	}
	defer tf.Close()
	d, err := c.walk(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Link(tf, name)
}

// list names what dir holds.
func (c *client) list(dir string) ([]string, error) {
	f, err := c.walk(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, _, err := f.Open(p9.ReadOnly); err != nil {
		return nil, err
	}
	var names []string
	for off := uint64(0); ; {
		ds, err := f.Readdir(off, 64<<10)
		if err != nil {
			return names, err
		}
		if len(ds) == 0 {
			return names, nil
		}
		for _, d := range ds {
			names = append(names, d.Name)
			off = d.Offset
		}
	}
}

// errnoOf is the errno a 9P call was answered with.
func errnoOf(err error) syscall.Errno {
	var le linux.Errno
	if errors.As(err, &le) {
		return syscall.Errno(le)
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return 0
}

var eventually = testenv.Eventually

// waitCtx is how long a test gives anything that should end at once.
const waitLong = 30 * time.Second

func withTimeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	t.Cleanup(cancel)
	return ctx
}

// waitInEvents opens f (a bot's events), reads its history, and leaves a
// read of what comes next waiting in the server.
func (n *np) waitInEvents(t *testing.T, f p9.File) {
	t.Helper()
	_, _, err := f.Open(p9.ReadOnly)
	must(t, err)
	buf := make([]byte, 64<<10)
	nr, err := f.ReadAt(buf, 0)
	must(t, err)
	go f.ReadAt(buf, int64(nr))
	eventually(t, waitLong, "the read waits in the server", func() bool { return n.srv.Reading() == 1 })
}
