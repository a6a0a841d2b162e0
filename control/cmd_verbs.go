package control

import (
	"context"
	"fmt"
	"path"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mattn/go-shellwords"
	"github.com/memohfs/memohfs/internal/shquote"
	"github.com/memohfs/memohfs/runtime"
	"github.com/memohfs/memohfs/store"
)

// A connection's ctl verbs, one per line, as Inferno's cmd(3) has them.
// Arguments are shell-quoted words (no expansion, no operators: exec runs
// no shell; `exec sh -c '...'` does).
//
//	$ exec 3<>/M/b/cmd/clone; read n <&3
//	$ echo 'dir /data/src' >&3
//	$ echo 'env GOFLAGS=-mod=mod' >&3
//	$ echo 'exec go test ./...' >&3
//	$ cat /M/b/cmd/$n/data
type connVerb struct {
	name     string
	usage    string
	min, max int // argument counts; max -1: any
	run      func(k *Conn, ctx context.Context, args []string) error
}

var connVerbs = []connVerb{
	{"dir", "dir PATH: the working dir in the bot (default /data)", 1, 1, (*Conn).setDir},
	{"env", "env KEY=VALUE...: over the bot's process env", 1, -1, (*Conn).addEnv},
	{"exec", "exec ARG...: run it (no shell), returns once it runs", 1, -1, (*Conn).exec},
	{"kill", "kill [SIGNAL]: signal every process it started (default KILL)", 0, 1, (*Conn).kill},
	{"killonclose", "killonclose: kill it when the last ctl closes", 0, 0, (*Conn).setKillOnClose},
	{"closestdin", "closestdin: end of file on its stdin", 0, 0, (*Conn).closeStdin},
}

// verbNames lists the verbs, for an unknown one's error.
func verbNames() string {
	names := make([]string, len(connVerbs))
	for i, v := range connVerbs {
		names[i] = v.name
	}
	return strings.Join(names, ", ")
}

// Ctl runs the verbs written to the connection's ctl, one per line, and
// stops at the first that fails; its reason goes to the connection's
// status and to the bot's err.
func (k *Conn) Ctl(ctx context.Context, text string) error {
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if err := k.ctlLine(ctx, line); err != nil {
			err = wrap(err, fmt.Sprintf("cmd/%d", k.N))
			k.mu.Lock()
			k.lastErr = err.Error()
			k.mu.Unlock()
			k.b.setErr(err.Error())
			return err
		}
	}
	k.mu.Lock()
	k.lastErr = ""
	k.mu.Unlock()
	return nil
}

func (k *Conn) ctlLine(ctx context.Context, line string) error {
	name, rest, _ := strings.Cut(line, " ")
	var v *connVerb
	for i := range connVerbs {
		if connVerbs[i].name == name {
			v = &connVerbs[i]
		}
	}
	if v == nil {
		return errorf(KindInvalid, "unknown verb %q; the verbs are: %s", name, verbNames())
	}
	p := shellwords.NewParser()
	args, err := p.Parse(rest)
	if err != nil {
		return errorf(KindInvalid, "%s: %v (quote with '...' or \"...\")", name, err)
	}
	if p.Position >= 0 {
		return errorf(KindInvalid, "%s: unquoted %q: exec runs no shell; quote it, or write exec sh -c '...'",
			name, strings.TrimSpace(rest[p.Position:min(len(rest), p.Position+2)]))
	}
	if len(args) < v.min || v.max >= 0 && len(args) > v.max {
		return errorf(KindInvalid, "usage: %s", v.usage)
	}
	return v.run(k, ctx, args)
}

// beforeExec fails with EBUSY once the connection has run.
func (k *Conn) beforeExec(verb string) error {
	if k.state != ConnOpen {
		return errorf(KindBusy, "%s: the command has run already (state %s): clone a new connection", verb, k.state)
	}
	return nil
}

func (k *Conn) setDir(_ context.Context, args []string) error {
	d := args[0]
	if !path.IsAbs(d) || strings.ContainsRune(d, 0) {
		return errorf(KindInvalid, "dir %q: want an absolute path in the bot", d)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.beforeExec("dir"); err != nil {
		return err
	}
	k.dir = path.Clean(d)
	return nil
}

func (k *Conn) addEnv(_ context.Context, args []string) error {
	for _, kv := range args {
		key, _, ok := strings.Cut(kv, "=")
		if !ok || key == "" || strings.ContainsAny(kv, "\x00") {
			return errorf(KindInvalid, "env %q: want KEY=VALUE", kv)
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.beforeExec("env"); err != nil {
		return err
	}
	k.env = append(k.env, args...)
	return nil
}

func (k *Conn) setKillOnClose(context.Context, []string) error {
	k.mu.Lock()
	k.killOnClose = true
	k.mu.Unlock()
	return nil
}

func (k *Conn) closeStdin(context.Context, []string) error {
	k.mu.Lock()
	proc := k.proc
	k.stdinClosed = true
	k.mu.Unlock()
	if proc != nil {
		return wrap(proc.CloseStdin(), "closestdin")
	}
	return nil
}

func (k *Conn) kill(ctx context.Context, args []string) error {
	sig := syscall.SIGKILL
	if len(args) == 1 {
		s, err := runtime.ParseSignal(args[0])
		if err != nil {
			return wrap(err, "kill")
		}
		sig = s
	}
	k.mu.Lock()
	proc, state := k.proc, k.state
	k.mu.Unlock()
	if proc == nil {
		return errorf(KindBusy, "kill: nothing runs (state %s)", state)
	}
	return wrap(proc.Signal(context.WithoutCancel(ctx), sig), "kill")
}

// exec starts the command and returns once it runs. What runs in a bot
// is on record before it runs: a record that cannot be written stops
// it; a start that fails is recorded as failed.
func (k *Conn) exec(ctx context.Context, argv []string) error {
	c, b := k.c, k.b
	k.mu.Lock()
	if err := k.beforeExec("exec"); err != nil {
		k.mu.Unlock()
		return err
	}
	if k.execID != "" {
		k.mu.Unlock()
		return errorf(KindBusy, "exec: another exec of this connection is starting")
	}
	k.execID = newExecID(k.N)
	spec := runtime.ExecSpec{ID: k.execID, Args: argv, Dir: k.dir, Env: append([]string(nil), k.env...)}
	k.argv = argv
	k.mu.Unlock()
	undo := func() {
		k.mu.Lock()
		k.execID, k.argv = "", nil
		k.mu.Unlock()
	}
	if st := b.getState(); st != store.StateRunning {
		undo()
		return errorf(KindBusy, "bot %q is %s: exec needs it running (write start to its ctl)", b.name, st)
	}
	// Once begun, it runs to its end (see Controller.operate).
	ctx = context.WithoutCancel(ctx)
	detail := map[string]any{"n": k.N, "argv": shquote.Join(argv), "dir": spec.Dir, "uid": k.uid}
	if _, err := c.st.StartCmd(ctx, store.Cmd{BotID: b.id(), N: k.N, ExecID: spec.ID, Argv: argv, Dir: spec.Dir, UID: k.uid}, detail); err != nil {
		undo()
		return wrap(err, "exec: record")
	}
	b.eventsRecorded()
	proc, err := c.rt.ExecStart(ctx, b.name, spec)
	if err != nil {
		err = wrap(err, "exec")
		if rerr := c.st.EndCmd(ctx, b.id(), k.N, store.CmdEnd{At: time.Now(), State: "failed", Error: err.Error()},
			map[string]any{"n": k.N, "status": "failed", "error": err.Error()}); rerr != nil {
			c.log.Warn("cmd: record failed exec", "bot", b.name, "n", k.N, "err", rerr)
		}
		b.eventsRecorded()
		k.mu.Lock()
		k.state = ConnDone
		k.mu.Unlock()
		k.closeRan()
		close(k.ended)
		return err
	}
	k.mu.Lock()
	k.proc, k.started, k.state = proc, time.Now(), ConnRunning
	k.stderr = newRing(stderrKeep)
	closeStdin := k.stdinClosed
	k.mu.Unlock()
	if closeStdin {
		_ = proc.CloseStdin()
	}
	k.closeRan()
	c.wg.Add(2)
	go func() {
		defer c.wg.Done()
		k.stderr.pump(c.life, proc.Stderr)
	}()
	go func() {
		defer c.wg.Done()
		k.follow(proc)
	}()
	return nil
}

// follow records the process's end and, when nothing of the connection
// is open any more, ends it.
func (k *Conn) follow(proc *runtime.Proc) {
	ex := proc.Exit()
	c, b := k.c, k.b
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	end := cmdEnd(ex)
	end.Pid = int(proc.Pid)
	k.mu.Lock()
	started := k.started
	k.mu.Unlock()
	detail := map[string]any{"n": k.N, "status": ex.String(), "ms": ex.At.Sub(started).Milliseconds()}
	if err := c.st.EndCmd(ctx, b.id(), k.N, end, detail); err != nil {
		c.log.Warn("cmd: record exit", "bot", b.name, "n", k.N, "err", err)
	}
	b.eventsRecorded()
	k.mu.Lock()
	k.exit, k.state = &ex, ConnDone
	open := k.opens
	k.mu.Unlock()
	close(k.ended)
	if open == 0 {
		k.end(c.life)
	}
}

// waitLine is what wait gives: pid, real ms, and how it ended.
func waitLine(pid uint32, started time.Time, ex runtime.ExitInfo) string {
	return strconv.Itoa(int(pid)) + " " + strconv.FormatInt(max(0, ex.At.Sub(started).Milliseconds()), 10) + " " + ex.String() + "\n"
}
