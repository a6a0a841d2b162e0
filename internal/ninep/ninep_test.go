package ninep_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/hugelgupf/p9/p9"
	"github.com/memohfs/memohfs/internal/ninep"
	"golang.org/x/sys/unix"
)

// TestScenario9P is the filesystem issue's end-to-end scenario over 9P:
// mkdir, start, status, data/ write and read, snapshot, restore, rmdir.
// What 9P wrote, the FUSE mount and the host dir see, and the other way.
func TestScenario9P(t *testing.T) {
	n := newNP(t, ninep.Options{})
	c := n.dial(t, 0, p9.NoUID)
	must(t, c.mkdir("/", "b1"))
	if names, err := c.list("/"); err != nil || strings.Join(names, ",") != "b1" {
		t.Fatalf("ls / = %v, %v", names, err)
	}
	if names, err := c.list("b1"); err != nil || strings.Join(names, ",") != "ctl,status,err,events,log,data,skills,snapshots,cmd" {
		t.Fatalf("ls b1 = %v, %v", names, err)
	}
	c.mustWrite("b1/ctl", "start\n")
	if st := c.mustRead("b1/status"); !strings.Contains(st, "state running\n") {
		t.Fatalf("status after start:\n%s", st)
	}
	if st, fuse := c.mustRead("b1/status"), n.Read("b1", "status"); st != fuse {
		t.Errorf("status over 9P and FUSE differ:\n%s\n%s", st, fuse)
	}
	// data/: a file made over 9P is the host's, and the bot's.
	writeNew(t, c, "b1/data", "hello.txt", "hello from 9p\n")
	if b, err := os.ReadFile(filepath.Join(n.HostData("b1"), "hello.txt")); err != nil || string(b) != "hello from 9p\n" {
		t.Fatalf("host file = %q, %v", b, err)
	}
	if out, code := n.Exec("b1", "cat", "/data/hello.txt"); code != 0 || out != "hello from 9p\n" {
		t.Fatalf("bot sees %q (exit %d)", out, code)
	}
	if got := c.mustRead("b1/data/hello.txt"); got != "hello from 9p\n" {
		t.Fatalf("read back %q", got)
	}
	must(t, c.mkdir("b1/data", "sub"))
	must(t, os.WriteFile(filepath.Join(n.HostData("b1"), "sub", "host.txt"), []byte("from the host\n"), 0o644))
	if got := c.mustRead("b1/data/sub/host.txt"); got != "from the host\n" {
		t.Fatalf("host's file over 9P: %q", got)
	}
	// snapshot, change, restore: the old content is back.
	must(t, c.mkdir("b1/snapshots", "s1"))
	if info := c.mustRead("b1/snapshots/s1/info"); !strings.Contains(info, "name s1\n") {
		t.Fatalf("info:\n%s", info)
	}
	if got := c.mustRead("b1/snapshots/s1/data/hello.txt"); got != "hello from 9p\n" {
		t.Fatalf("snapshot's data/hello.txt = %q", got)
	}
	c.mustWrite("b1/data/hello.txt", "changed\n")
	if got := c.mustRead("b1/data/hello.txt"); got != "changed\n" {
		t.Fatalf("after the change: %q", got)
	}
	c.mustWrite("b1/ctl", "restore s1\n")
	if got := c.mustRead("b1/data/hello.txt"); got != "hello from 9p\n" {
		t.Fatalf("after restore: %q", got)
	}
	if st := c.mustRead("b1/status"); !strings.Contains(st, "state running\n") {
		t.Fatalf("status after restore:\n%s", st)
	}
	c.mustWrite("b1/ctl", "stop\n")
	must(t, c.rmdir("/", "b1"))
	if _, err := c.walk("b1"); errnoOf(err) != syscall.ENOENT {
		t.Fatalf("walk b1 after rmdir: %v", err)
	}
	if _, err := os.Stat(n.Path("b1")); !os.IsNotExist(err) {
		t.Fatalf("the FUSE mount still has b1: %v", err)
	}
}

// writeNew creates name in dir over 9P and writes content.
func writeNew(t *testing.T, c *client, dir, name, content string) {
	t.Helper()
	d, err := c.walk(dir)
	must(t, err)
	defer d.Close()
	f, _, _, err := d.Create(name, p9.WriteOnly, 0o644, p9.NoUID, p9.NoGID)
	must(t, err)
	defer f.Close()
	if _, err := f.WriteAt([]byte(content), 0); err != nil {
		t.Fatal(err)
	}
}

// TestErrors9P: a refused operation is an Rlerror carrying the errno
// the same operation gets on the FUSE mount, in the same test, and the
// reason is in err.
func TestErrors9P(t *testing.T) {
	n := newNP(t, ninep.Options{})
	c := n.dial(t, 0, p9.NoUID)
	must(t, c.mkdir("/", "b1"))
	c.mustWrite("b1/ctl", "start\n")
	t.Cleanup(func() { n.Ctl("b1", "stop") })
	fuseWrite := func(p, data string) error {
		f, err := os.OpenFile(n.Path(p), os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = f.Write([]byte(data))
		return err
	}
	cases := []struct {
		what   string
		over9p func() error
		fuse   func() error
		want   syscall.Errno
		err    string // in err afterwards
	}{
		{"an unknown verb", func() error { return c.write("b1/ctl", "fly\n") }, func() error { return fuseWrite("b1/ctl", "fly\n") }, syscall.EINVAL, "fly"},
		{"rmdir of a running bot", func() error { return c.rmdir("/", "b1") }, func() error { return os.Remove(n.Path("b1")) }, syscall.EBUSY, "running"},
		{"restore of no snapshot", func() error { return c.write("b1/ctl", "restore nope\n") }, func() error { return fuseWrite("b1/ctl", "restore nope\n") }, syscall.ENOENT, "nope"},
		{"a bot that exists", func() error { return c.mkdir("/", "b1") }, func() error { return os.Mkdir(n.Path("b1"), 0o755) }, syscall.EEXIST, ""},
		{"a bad bot name", func() error { return c.mkdir("/", "Bad Name") }, func() error { return os.Mkdir(n.Path("Bad Name"), 0o755) }, syscall.EINVAL, ""},
		{"a missing bot", func() error { _, err := c.walk("nope/status"); return err }, func() error { _, err := os.Stat(n.Path("nope/status")); return err }, syscall.ENOENT, ""},
		{"a name too long", func() error { return c.mkdir("/", strings.Repeat("a", 256)) }, func() error { return os.Mkdir(n.Path(strings.Repeat("a", 256)), 0o755) }, syscall.ENAMETOOLONG, ""},
		{"writing status", func() error { return c.write("b1/status", "x") }, func() error { return fuseWrite("b1/status", "x") }, syscall.EACCES, ""},
		{"writing under a snapshot", func() error { return c.mkdir("b1/snapshots/s1/data", "x") }, func() error { return os.Mkdir(n.Path("b1/snapshots/s1/data/x"), 0o755) }, syscall.EROFS, ""},
		{"a rename to another bot", func() error { return c.renameAt("b1/data", "f", "b2/data", "f") }, func() error { return os.Rename(n.Path("b1/data/f"), n.Path("b2/data/f")) }, syscall.EXDEV, ""},
		{"a rename into skills/", func() error { return c.renameAt("b1/data", "f", "b1/skills", "f") }, func() error { return os.Rename(n.Path("b1/data/f"), n.Path("b1/skills/f")) }, syscall.EXDEV, ""},
		{"a link to another bot", func() error { return c.link("b1/data/f", "b2/data", "f") }, func() error { return os.Link(n.Path("b1/data/f"), n.Path("b2/data/f")) }, syscall.EXDEV, ""},
	}
	must(t, c.mkdir("b1/snapshots", "s1"))
	must(t, c.mkdir("/", "b2"))
	writeNew(t, c, "b1/data", "f", "x")
	for _, tc := range cases {
		err := tc.over9p()
		got, onFUSE := errnoOf(err), errnoOf(tc.fuse())
		if got != tc.want || onFUSE != tc.want {
			t.Errorf("%s: 9P %v (errno %d), FUSE errno %d, want %v on both", tc.what, err, got, onFUSE, tc.want)
			continue
		}
		if tc.err != "" {
			// err holds the reason of the last failure: the FUSE one, just
			// now. Make it the 9P one's again, and read it over 9P.
			tc.over9p()
			if e := c.mustRead("b1/err"); !strings.Contains(e, tc.err) {
				t.Errorf("%s: err says %q, want it to name %q", tc.what, e, tc.err)
			}
		}
	}
}

// TestEventsFlush9P: a read at the end of events waits for the next
// event; a Tflush of it ends it (the read answers, the server reads
// nothing more for it), and the fid reads on after.
func TestEventsFlush9P(t *testing.T) {
	n := newNP(t, ninep.Options{})
	c := n.dial(t, 0, p9.NoUID)
	must(t, c.mkdir("/", "b1"))
	f, err := c.walk("b1/events")
	must(t, err)
	defer f.Close()
	_, _, err = f.Open(p9.ReadOnly)
	must(t, err)
	buf := make([]byte, 64<<10)
	nr, err := f.ReadAt(buf, 0)
	must(t, err)
	off := int64(nr)
	if !strings.Contains(string(buf[:nr]), " create ") {
		t.Fatalf("history: %q", buf[:nr])
	}
	rc, ok := f.(p9.ReaderAtContext)
	if !ok {
		t.Fatal("the client's file has no ReadAtContext")
	}
	for round := 0; round < 3; round++ {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { _, err := rc.ReadAtContext(ctx, buf, off); done <- err }()
		eventually(t, waitLong, "the read waits in the server", func() bool { return n.srv.Reading() == 1 })
		cancel()
		select {
		case err := <-done:
			if err == nil {
				t.Fatalf("round %d: the flushed read returned data", round)
			}
		case <-withTimeout(t).Done():
			t.Fatalf("round %d: the flushed read did not end", round)
		}
		eventually(t, waitLong, "the server let go of the read", func() bool { return n.srv.Reading() == 0 })
	}
	// The fid reads on: the next event comes.
	done := make(chan string, 1)
	go func() {
		nr, err := f.ReadAt(buf, off)
		if err != nil {
			done <- err.Error()
			return
		}
		done <- string(buf[:nr])
	}()
	eventually(t, waitLong, "the read waits", func() bool { return n.srv.Reading() == 1 })
	c.mustWrite("b1/ctl", "start\n")
	if got := <-done; !strings.Contains(got, "start") {
		t.Fatalf("event after the flushes: %q", got)
	}
	c.mustWrite("b1/ctl", "stop\n")
}

// TestCmd9P: a cmd/ connection over 9P: clone, exec, data, wait, and
// clunk ends it as close does on the mount.
func TestCmd9P(t *testing.T) {
	n := newNP(t, ninep.Options{})
	c := n.dial(t, 0, p9.NoUID)
	must(t, c.mkdir("/", "b1"))
	c.mustWrite("b1/ctl", "start\n")
	clone, err := c.walk("b1/cmd/clone")
	must(t, err)
	_, _, err = clone.Open(p9.ReadWrite)
	must(t, err)
	buf := make([]byte, 64)
	nr, err := clone.ReadAt(buf, 0)
	must(t, err)
	conn := strings.TrimSpace(string(buf[:nr]))
	if conn == "" {
		t.Fatal("clone gave no connection")
	}
	if names, err := c.list("b1/cmd/" + conn); err != nil || strings.Join(names, ",") != "ctl,data,stderr,wait,status" {
		t.Fatalf("ls cmd/%s = %v, %v", conn, names, err)
	}
	data, err := c.walk("b1/cmd/" + conn + "/data")
	must(t, err)
	_, _, err = data.Open(p9.ReadWrite)
	must(t, err)
	if _, err := clone.WriteAt([]byte(`exec sh -c 'read x; echo got $x; echo oops >&2; exit 3'`+"\n"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := data.WriteAt([]byte("ping\n"), 0); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for !strings.Contains(out.String(), "\n") {
		nr, err := data.ReadAt(buf, 0)
		if err != nil || nr == 0 {
			t.Fatalf("data: %q, %v", out.String(), err)
		}
		out.Write(buf[:nr])
	}
	if out.String() != "got ping\n" {
		t.Fatalf("data = %q", out.String())
	}
	if got := c.mustRead("b1/cmd/" + conn + "/stderr"); got != "oops\n" {
		t.Fatalf("stderr = %q", got)
	}
	if got := c.mustRead("b1/cmd/" + conn + "/wait"); !strings.HasSuffix(got, " exit 3\n") {
		t.Fatalf("wait = %q", got)
	}
	data.Close()
	clone.Close()
	// Every file of the connection clunked: it is gone.
	eventually(t, waitLong, "the connection ends with its last clunk", func() bool {
		_, err := c.walk("b1/cmd/" + conn)
		return errnoOf(err) == syscall.ENOENT
	})
	c.mustWrite("b1/ctl", "stop\n")
}

// TestIdentity9P: who a unix peer is comes from SO_PEERCRED: uid 1
// cannot walk into root's bot though it claims uid 0 in Tattach; the bot
// it makes is its own, and root's client cannot tell it otherwise.
func TestIdentity9P(t *testing.T) {
	n := newNP(t, ninep.Options{})
	must(t, os.Chmod(filepath.Dir(n.sock), 0o755))
	must(t, os.Chmod(n.sock, 0o666))
	rootc := n.dial(t, 0, p9.NoUID)
	must(t, rootc.mkdir("/", "r1"))
	u := n.dial(t, 1, 0) // claims uid 0
	if _, err := u.walk("r1/status"); errnoOf(err) != syscall.EACCES {
		t.Fatalf("uid 1 walked into root's bot: %v", err)
	}
	if err := u.write("r1/ctl", "start\n"); errnoOf(err) != syscall.EACCES {
		t.Fatalf("uid 1 wrote root's ctl: %v", err)
	}
	// /M is 1777: only a bot's owner (or root) may remove it, as the
	// kernel rules the FUSE mount.
	_, fuseErr := n.AsUser(1, "rmdir "+n.Path("r1"))
	if err := u.rmdir("/", "r1"); errnoOf(err) != syscall.EPERM || fuseErr == nil {
		t.Fatalf("uid 1 removing root's bot: 9P %v, FUSE %v", err, fuseErr)
	}
	must(t, u.mkdir("/", "u1"))
	if st, err := n.Control.Status("u1"); err != nil || st.Owner != 1 {
		t.Fatalf("u1's owner is %d, want 1", st.Owner)
	}
	if got := u.mustRead("u1/status"); !strings.Contains(got, "state created") {
		t.Fatalf("u1/status:\n%s", got)
	}
	// data/ runs as the peer: a file uid 1 makes is uid 1's on the host,
	// and uid 1 cannot read root's 0600 file in its own bot's data.
	writeNew(t, u, "u1/data", "mine", "x")
	var st unix.Stat_t
	must(t, unix.Stat(filepath.Join(n.HostData("u1"), "mine"), &st))
	if st.Uid != 1 {
		t.Fatalf("a file uid 1 made over 9P is uid %d's", st.Uid)
	}
	must(t, os.WriteFile(filepath.Join(n.HostData("u1"), "roots"), []byte("secret"), 0o600))
	if _, err := u.read("u1/data/roots"); errnoOf(err) != syscall.EACCES {
		t.Fatalf("uid 1 read root's 0600 file: %v", err)
	}
	// Root may do anything, as on the mount.
	if _, err := rootc.read("u1/status"); err != nil {
		t.Fatal(err)
	}
}

// TestManyClients9P: 100 clients at once, each on its own connection,
// each reading its bot's status and writing a data file.
func TestManyClients9P(t *testing.T) {
	n := newNP(t, ninep.Options{})
	c := n.dial(t, 0, p9.NoUID)
	must(t, c.mkdir("/", "b1"))
	const clients = 100
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nc, err := dialAs(n.sock, 0)
			if err != nil {
				errs <- err
				return
			}
			cl, err := p9.NewClient(nc)
			if err != nil {
				errs <- err
				return
			}
			defer cl.Close()
			root, err := cl.Attach("")
			if err != nil {
				errs <- err
				return
			}
			x := &client{t: t, c: cl, root: root}
			defer root.Close()
			if st, err := x.read("b1/status"); err != nil || !strings.Contains(st, "name b1\n") {
				errs <- fmt.Errorf("client %d: status %q, %v", i, st, err)
				return
			}
			d, err := x.walk("b1/data")
			if err != nil {
				errs <- err
				return
			}
			defer d.Close()
			f, _, _, err := d.Create(fmt.Sprintf("f%d", i), p9.WriteOnly, 0o644, p9.NoUID, p9.NoGID)
			if err != nil {
				errs <- fmt.Errorf("client %d: create: %v", i, err)
				return
			}
			defer f.Close()
			if _, err := f.WriteAt([]byte(fmt.Sprint(i)), 0); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i := range clients {
		if b, err := os.ReadFile(filepath.Join(n.HostData("b1"), fmt.Sprintf("f%d", i))); err != nil || string(b) != fmt.Sprint(i) {
			t.Errorf("f%d = %q, %v", i, b, err)
		}
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestWaitingReadBlocksNothing9P: while a read of events waits, a rename
// in data/ on the same connection (which takes the library's rename lock,
// one per connection: a kernel mount is one connection for all its
// users) and walks after it go on: the read waits outside that lock.
func TestWaitingReadBlocksNothing9P(t *testing.T) {
	n := newNP(t, ninep.Options{})
	a := n.dial(t, 0, p9.NoUID)
	must(t, a.mkdir("/", "b1"))
	writeNew(t, a, "b1/data", "old", "x")
	f, err := a.walk("b1/events")
	must(t, err)
	n.waitInEvents(t, f)

	d, err := a.walk("b1/data")
	must(t, err)
	done := make(chan error, 1)
	go func() {
		err := d.RenameAt("old", d, "new")
		if err == nil {
			_, err = a.read("b1/status")
		}
		done <- err
	}()
	select {
	case err := <-done:
		must(t, err)
	case <-withTimeout(t).Done():
		// Every request of this connection now waits on the server:
		// end the server first, so no clean-up call waits on it too.
		n.srv.Close()
		t.Fatal("a rename and a walk waited for a read of events")
	}
	if n.srv.Reading() != 1 {
		t.Fatalf("the read stopped waiting (%d reading)", n.srv.Reading())
	}
	if _, err := os.Stat(filepath.Join(n.HostData("b1"), "new")); err != nil {
		t.Fatal(err)
	}
	d.Close()
	f.Close()
}
