package fsnodes_test

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	goruntime "runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/memohfs/memohfs/control"
	"github.com/memohfs/memohfs/fsnodes"
	"github.com/memohfs/memohfs/internal/pipeio"
	"github.com/memohfs/memohfs/internal/testenv"
	"golang.org/x/sys/unix"
)

// cmdStack is a stack with one running bot.
func cmdStack(t *testing.T, opts fsnodes.Options) (*stack, string) {
	t.Helper()
	s := newStack(t, opts)
	s.Mkbot("b")
	s.MustCtl("b", "start")
	return s, "b"
}

// The shell way, with plain tools: clone, exec, then data, stderr and wait.
func TestCmdShell(t *testing.T) {
	s, _ := cmdStack(t, fsnodes.Options{})
	out := s.MustSh(`set -e
exec 3<>$M/b/cmd/clone
read n <&3
echo "n=$n"
echo 'exec sh -c "read l; echo got:$l; echo oops >&2; exit 3"' >&3
echo hello > $M/b/cmd/$n/data
echo "data=$(cat $M/b/cmd/$n/data)"
echo "stderr=$(cat $M/b/cmd/$n/stderr)"
echo "wait=$(cat $M/b/cmd/$n/wait)"
cat $M/b/cmd/$n/status
`)
	t.Log(out)
	for _, want := range []string{"data=got:hello\n", "stderr=oops\n", " exit 3\n", "state done\n", "status exit 3\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("want %q in:\n%s", want, out)
		}
	}
}

// conn is one connection opened the shell way: its ctl fd and number.
type conn struct {
	ctl *os.File
	n   string
	dir string
}

func (s *stack) clone(bot string) *conn {
	s.T.Helper()
	f, err := os.OpenFile(s.Path(bot, "cmd", "clone"), os.O_RDWR, 0)
	if err != nil {
		s.T.Fatalf("clone: %v", err)
	}
	b := make([]byte, 16)
	n, err := f.Read(b)
	if err != nil {
		s.T.Fatal(err)
	}
	num := strings.TrimSpace(string(b[:n]))
	return &conn{ctl: f, n: num, dir: s.Path(bot, "cmd", num)}
}

func (c *conn) say(verb string) error {
	_, err := c.ctl.Write([]byte(verb + "\n"))
	return err
}

func (c *conn) mustSay(t *testing.T, verb string) {
	t.Helper()
	if err := c.say(verb); err != nil {
		st, _ := os.ReadFile(filepath.Join(c.dir, "status"))
		t.Fatalf("%s: %v\n%s", verb, err, st)
	}
}

func (c *conn) open(t *testing.T, name string, flag int) *os.File {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(c.dir, name), flag, 0)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// procsIn lists the command lines of the bot's processes (from the host:
// /proc of the pids in the container's task).
func (s *stack) procsIn(bot string) string {
	s.T.Helper()
	out, code := s.Exec(bot, "ps", "-o", "args")
	if code != 0 {
		s.T.Fatalf("ps: %d %s", code, out)
	}
	return out
}

// countProcs counts the processes in ps (procsIn) whose whole command
// line is args. Whole lines: a shell's own line names what it is yet to
// start (`sh -c '...; echo up; sleep 3'` contains "sleep 3" from its
// first instant), so a substring would see the command as far along
// before it has got there.
func countProcs(ps, args string) int {
	n := 0
	for _, l := range strings.Split(ps, "\n") {
		if strings.TrimSpace(l) == args {
			n++
		}
	}
	return n
}

// Every way a connection ends ends the whole tree it started: the kill
// verb, the last fd closing, killonclose with data still open.
func TestCmdTreeKill(t *testing.T) {
	s, _ := cmdStack(t, fsnodes.Options{})
	tree := func(tag string) string {
		return fmt.Sprintf("exec sh -c 'sleep %s1 & (sleep %s2 &); echo up; sleep %s3'", tag, tag, tag)
	}
	// running: the three sleeps themselves run. sleep N3 starts after
	// echo up, so "up" has been written by then.
	running := func(tag string) func() bool {
		return func() bool {
			ps := s.procsIn("b")
			return countProcs(ps, "sleep "+tag+"1") == 1 && countProcs(ps, "sleep "+tag+"2") == 1 && countProcs(ps, "sleep "+tag+"3") == 1
		}
	}
	gone := func(tag string) bool { return !strings.Contains(s.procsIn("b"), "sleep "+tag) }
	upLine := func(c *conn) {
		t.Helper()
		f := c.open(t, "data", os.O_RDONLY)
		defer f.Close()
		b := make([]byte, 3)
		if _, err := io.ReadFull(f, b); err != nil || string(b) != "up\n" {
			t.Fatalf("data: %q %v", b, err)
		}
	}

	t.Run("kill", func(t *testing.T) {
		c := s.clone("b")
		defer c.ctl.Close()
		c.mustSay(t, tree("701"))
		upLine(c)
		eventually(t, time.Minute, "the tree runs", running("701"))
		c.mustSay(t, "kill")
		w, err := os.ReadFile(filepath.Join(c.dir, "wait"))
		if err != nil || !strings.HasSuffix(string(w), " signal KILL\n") {
			t.Fatalf("wait: %q %v", w, err)
		}
		eventually(t, time.Minute, "nothing of it left", func() bool { return gone("701") })
	})
	t.Run("last close", func(t *testing.T) {
		c := s.clone("b")
		c.mustSay(t, tree("702"))
		upLine(c)
		eventually(t, time.Minute, "the tree runs", running("702"))
		c.ctl.Close()
		eventually(t, time.Minute, "nothing of it left", func() bool { return gone("702") })
		eventually(t, time.Minute, "the connection gone", func() bool {
			_, err := os.Stat(c.dir)
			return errnoIs(err, syscall.ENOENT)
		})
	})
	t.Run("killonclose", func(t *testing.T) {
		c := s.clone("b")
		c.mustSay(t, "killonclose")
		c.mustSay(t, tree("703"))
		data := c.open(t, "data", os.O_RDONLY)
		defer data.Close()
		// Not read before the kill: "up" must still be there after it.
		eventually(t, time.Minute, "the tree runs, up written", running("703"))
		c.ctl.Close()
		eventually(t, time.Minute, "nothing of it left", func() bool { return gone("703") })
		b, err := io.ReadAll(data) // the output ends with it
		if err != nil || string(b) != "up\n" {
			t.Fatalf("data after the kill: %q %v", b, err)
		}
	})
}

// Bad input: a clear errno, the reason in status and in the bot's err.
func TestCmdBadInput(t *testing.T) {
	s, _ := cmdStack(t, fsnodes.Options{})
	var c *conn
	for verb, want := range map[string]syscall.Errno{
		"frobnicate":              syscall.EINVAL,
		"exec":                    syscall.EINVAL,
		"exec echo a; rm -rf /":   syscall.EINVAL,
		"exec echo 'unterminated": syscall.EINVAL,
		"dir relative/path":       syscall.EINVAL,
		"env NOEQUALS":            syscall.EINVAL,
		"kill NOSUCHSIG":          syscall.EINVAL,
		"kill":                    syscall.EBUSY, // nothing runs yet
		"exec /no/such/binary":    syscall.ENOENT,
		"exec /etc/passwd":        syscall.EACCES,
	} {
		c = s.clone("b") // an exec that failed has used its connection
		defer c.ctl.Close()
		err := c.say(verb)
		if !errnoIs(err, want) {
			t.Errorf("%q: %v, want %v", verb, err, want)
			continue
		}
		st := s.Read("b", "cmd", c.n, "status")
		if !strings.Contains(st, "\nerror cmd/"+c.n+": ") {
			t.Errorf("%q: no error line in status:\n%s", verb, st)
		}
		if e := s.Read("b", "err"); !strings.HasPrefix(e, "cmd/"+c.n+": ") {
			t.Errorf("%q: err says %q", verb, e)
		}
	}
	// A failed exec is recorded, and the connection ran: no second exec.
	c = s.clone("b")
	defer c.ctl.Close()
	if err := c.say("exec /no/such/binary"); !errnoIs(err, syscall.ENOENT) {
		t.Fatalf("exec /no/such/binary: %v", err)
	}
	if err := c.say("exec true"); !errnoIs(err, syscall.EBUSY) {
		t.Errorf("exec after a failed exec: %v, want EBUSY", err)
	}
	if ev := readEvents(t, s, "b"); !strings.Contains(ev, " exit ") || !strings.Contains(ev, "status=failed") {
		t.Errorf("no failed exit event:\n%s", ev)
	}
	s.MustCtl("b", "stop")
	c2 := s.clone("b")
	defer c2.ctl.Close()
	if err := c2.say("exec true"); !errnoIs(err, syscall.EBUSY) {
		t.Fatalf("exec in a stopped bot: %v, want EBUSY", err)
	}
}

// readEvents reads a bot's events so far.
func readEvents(t *testing.T, s *stack, bot string) string {
	return testenv.ReadNow(t, s.Path(bot, "events"))
}

// The per-bot limit: EAGAIN with a reason; a closed connection frees its
// place.
func TestCmdLimit(t *testing.T) {
	s, _ := cmdStack(t, fsnodes.Options{})
	var cs []*conn
	for i := 0; i < control.DefaultCmdLimit; i++ {
		cs = append(cs, s.clone("b"))
	}
	_, err := os.OpenFile(s.Path("b", "cmd", "clone"), os.O_RDWR, 0)
	if !errnoIs(err, syscall.EAGAIN) {
		t.Fatalf("clone past the limit: %v, want EAGAIN", err)
	}
	if e := s.Read("b", "err"); !strings.Contains(e, "limit") {
		t.Fatalf("err: %q", e)
	}
	cs[0].ctl.Close()
	eventually(t, time.Minute, "a place free again", func() bool {
		f, err := os.OpenFile(s.Path("b", "cmd", "clone"), os.O_RDWR, 0)
		if err == nil {
			f.Close()
		}
		return err == nil
	})
	for _, c := range cs[1:] {
		c.ctl.Close()
	}
}

// 50 connections at once on one bot, each with its own input and output.
func TestCmdConcurrent(t *testing.T) {
	s, _ := cmdStack(t, fsnodes.Options{})
	const n = 50
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func(i int) {
			errs <- func() error {
				out, err := s.Sh(fmt.Sprintf(`exec 3<>$M/b/cmd/clone; read n <&3
echo 'exec sh -c "read x; echo $x:$((x*2))"' >&3
echo %d > $M/b/cmd/$n/data
cat $M/b/cmd/$n/data; cat $M/b/cmd/$n/wait`, i))
				if err != nil {
					return fmt.Errorf("%d: %v: %s", i, err, out)
				}
				if want := fmt.Sprintf("%d:%d\n", i, 2*i); !strings.HasPrefix(out, want) || !strings.HasSuffix(out, " exit 0\n") {
					return fmt.Errorf("%d: got %q, want %q then exit 0", i, out, want)
				}
				return nil
			}()
		}(i)
	}
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	eventually(t, time.Minute, "every connection gone", func() bool {
		ents, _ := os.ReadDir(s.Path("b", "cmd"))
		return len(ents) == 1
	})
	recs, err := s.Store.Cmds(t.Context(), s.StatusFields("b")["id"], false)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != n {
		t.Fatalf("%d records, want %d", len(recs), n)
	}
	for _, r := range recs {
		if r.End == nil || r.End.Status() != "exit 0" || r.Dir != "/data" || r.UID != 0 || r.Argv[0] != "sh" || r.Pid == 0 {
			t.Errorf("record %+v (end %+v)", r, r.End)
		}
	}
}

// A bot stopped under running connections: every process ends, every
// reader gets end of file, and the daemon keeps no goroutine or fd of
// them once they are closed.
func TestCmdBotStops(t *testing.T) {
	s, _ := cmdStack(t, fsnodes.Options{})
	// What the connections hold, counted precisely (pools of Postgres
	// and containerd connections come and go on their own): fds of
	// their FIFOs, and goroutines in their code.
	fifoDir := s.Runtime.Config().FIFODir
	held := func() (fifos []string, routines []string) {
		ents, _ := os.ReadDir("/proc/self/fd")
		for _, e := range ents {
			if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, fifoDir) {
				fifos = append(fifos, l)
			}
		}
		buf := make([]byte, 8<<20)
		for _, g := range strings.Split(string(buf[:goruntime.Stack(buf, true)]), "\n\n") {
			for _, mark := range []string{"control.(*Conn)", "control.(*ring)", "runtime.(*Proc)", "internal/pipeio."} {
				if strings.Contains(g, mark) {
					routines = append(routines, g)
					break
				}
			}
		}
		return fifos, routines
	}
	const n = 8
	round := func() {
		type reader struct {
			c    *conn
			data *os.File
			got  chan string
		}
		var rs []reader
		for i := 0; i < n; i++ {
			c := s.clone("b")
			c.mustSay(t, "exec sh -c 'echo up; sleep 1000 & sleep 1001'")
			r := reader{c: c, data: c.open(t, "data", os.O_RDONLY), got: make(chan string, 1)}
			go func() {
				b, err := io.ReadAll(r.data)
				r.got <- fmt.Sprintf("%q %v", b, err)
			}()
			rs = append(rs, r)
		}
		eventually(t, time.Minute, "every command runs", func() bool {
			return countProcs(s.procsIn("b"), "sleep 1001") == n // after each one's echo up
		})
		s.MustCtl("b", "stop")
		for i, r := range rs {
			if got := <-r.got; got != `"up\n" <nil>` {
				t.Errorf("reader %d got %s, want up and end of file", i, got)
			}
			w, err := os.ReadFile(filepath.Join(r.c.dir, "wait"))
			if err != nil || !strings.Contains(string(w), " signal ") {
				t.Errorf("wait %d: %q %v", i, w, err)
			}
			r.data.Close()
			r.c.ctl.Close()
		}
		eventually(t, time.Minute, "no connection left", func() bool {
			ents, _ := os.ReadDir(s.Path("b", "cmd"))
			return len(ents) == 1
		})
	}
	round()
	s.MustCtl("b", "start")
	// No collection meanwhile: an *os.File's finalizer would close an fd
	// the daemon forgot, and hide it.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	round()
	if ents, err := os.ReadDir(fifoDir); err != nil || len(ents) != 0 {
		t.Errorf("FIFO dirs left in %s: %v %v", fifoDir, ents, err)
	}
	var fifos, routines []string
	testenv.Eventually(t, time.Minute, "no FIFO fd and no goroutine of a connection left", func() bool {
		fifos, routines = held()
		return len(fifos) == 0 && len(routines) == 0
	})
	if len(fifos)+len(routines) > 0 {
		t.Fatalf("held: %v\n%s", fifos, strings.Join(routines, "\n\n"))
	}
}

// A read blocked on a command's output returns EINTR when its thread is
// signalled (the kernel sends FUSE_INTERRUPT), and the stream stays
// usable; a writer to a command that does not read blocks, holding no
// more than the pipes do, until the command ends (EPIPE).
func TestCmdInterruptAndBackpressure(t *testing.T) {
	s, _ := cmdStack(t, fsnodes.Options{})
	c := s.clone("b")
	defer c.ctl.Close()
	c.mustSay(t, "exec sh -c 'while read l; do echo $l; done'")
	data := c.open(t, "data", os.O_RDWR)
	defer data.Close()

	const tries = 5
	hits := 0
	for i := 0; i < tries; i++ {
		r0, _ := pipeio.Waits()
		res := make(chan error, 1)
		tidc := make(chan int, 1)
		go func() {
			goruntime.LockOSThread()
			defer goruntime.UnlockOSThread()
			tidc <- unix.Gettid()
			buf := make([]byte, 64)
			_, err := syscall.Read(int(data.Fd()), buf) // raw: no EINTR retry
			res <- err
		}()
		tid := <-tidc
		eventually(t, time.Minute, "the read waits in the daemon", func() bool { r, _ := pipeio.Waits(); return r > r0 })
		hits++
		var err error
		for err == nil || err == syscall.EAGAIN {
			unix.Tgkill(os.Getpid(), tid, syscall.SIGURG)
			select {
			case err = <-res:
			case <-time.After(10 * time.Millisecond):
				err = syscall.EAGAIN // not delivered yet: again
			}
		}
		if err != syscall.EINTR {
			t.Fatalf("interrupted read: %v, want EINTR", err)
		}
		// Still usable.
		if _, err := data.Write([]byte(fmt.Sprintf("line%d\n", i))); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 64)
		n, err := data.Read(b)
		if err != nil || string(b[:n]) != fmt.Sprintf("line%d\n", i) {
			t.Fatalf("after the interrupt: %q %v", b[:n], err)
		}
	}
	if hits != tries {
		t.Fatalf("the read was in its wait %d of %d times", hits, tries)
	}

	// Backpressure: a command that never reads.
	c2 := s.clone("b")
	defer c2.ctl.Close()
	c2.mustSay(t, "exec sleep 1000")
	in := c2.open(t, "data", os.O_WRONLY)
	defer in.Close()
	_, w0 := pipeio.Waits()
	const total = 64 << 20
	wrote := make(chan int, 1)
	go func() {
		n := 0
		chunk := make([]byte, 1<<20)
		for n < total {
			m, err := in.Write(chunk)
			n += m
			if err != nil {
				break
			}
		}
		wrote <- n
	}()
	eventually(t, time.Minute, "the writer waits", func() bool { _, w := pipeio.Waits(); return w > w0 })
	select {
	case n := <-wrote:
		t.Fatalf("the writer was not held: %d bytes taken", n)
	default:
	}
	c2.mustSay(t, "kill")
	n := <-wrote
	if n >= 4<<20 {
		t.Fatalf("%d bytes were taken by a command that reads nothing: more than the pipes hold", n)
	}
	t.Logf("a command that reads nothing took %d bytes before its writer was held", n)
}
