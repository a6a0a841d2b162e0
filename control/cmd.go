package control

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/memohfs/memohfs/internal/shquote"
	"github.com/memohfs/memohfs/runtime"
)

// Connections: commands run in a bot, Inferno's cmd(3) over containerd's
// exec. A connection is made by clone, configured and started by its ctl
// verbs (cmd_verbs.go), fed and read through its streams (cmd_io.go),
// and recorded in Postgres with exec and exit events (cmd_record.go).
//
// Lifetime: a connection lives while any of its files is open. When the
// last one closes, what still runs of it is killed, and the connection
// goes once that is reaped. killonclose kills it already when the last
// ctl closes. A bot that stops ends its connections' processes (runc
// kills every process of the container); their readers get end of file.

// DefaultCmdLimit is how many connections a bot may have at once.
const DefaultCmdLimit = 64

// ConnState is where a connection is in its life.
type ConnState string

const (
	ConnOpen    ConnState = "open"    // made, not exec'd yet
	ConnRunning ConnState = "running" // its process runs
	ConnDone    ConnState = "done"    // its process ended (or exec failed)
)

// ConnFile names a connection's files, for open counting.
type ConnFile int

const (
	FileCtl ConnFile = iota
	FileData
	FileStderr
	FileWait
	FileStatus
)

// Conn is one connection: /M/<bot>/cmd/<N>.
type Conn struct {
	c   *Controller
	b   *bot
	N   int
	uid uint32 // who made it

	mu          sync.Mutex
	state       ConnState
	dir         string
	env         []string
	argv        []string
	killOnClose bool
	stdinClosed bool // closestdin before exec
	lastErr     string
	opens       int // open files of the connection, all kinds
	ctlOpens    int
	dataReader  bool // data open for reading (one at a time)
	dataWriter  bool
	errReader   bool
	gone        bool // removed from the bot's table

	proc    *runtime.Proc
	execID  string
	started time.Time
	made    time.Time
	exit    *runtime.ExitInfo
	stderr  *ring

	ran     chan struct{} // closed at exec, or when exec failed or the connection ended without one
	ranOnce sync.Once
	ended   chan struct{} // closed once the process ended and its end is recorded
}

func (k *Conn) closeRan() { k.ranOnce.Do(func() { close(k.ran) }) }

// conns is a bot's connection table.
type conns struct {
	mu   sync.Mutex
	byN  map[int]*Conn
	last int // the highest N handed out; 0 until read from the store
}

func (b *bot) connTable() *conns {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmds == nil {
		b.cmds = &conns{byN: map[int]*Conn{}}
	}
	return b.cmds
}

// CmdClone makes a new connection of the bot for uid and counts the
// caller's open clone file as its ctl. EAGAIN (KindAgain) past the bot's
// limit.
func (c *Controller) CmdClone(ctx context.Context, name string, uid uint32) (*Conn, error) {
	b, err := c.get(name)
	if err != nil {
		return nil, err
	}
	t := b.connTable()
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.byN) >= c.opts.CmdLimit {
		err := errorf(KindAgain, "bot %q has %d connections, its limit: close one first", name, len(t.byN))
		b.setErr(err.Error())
		return nil, err
	}
	if t.last == 0 {
		// Numbers are never reused for a bot: N names one command in
		// the audit trail for good.
		last, err := c.st.LastCmd(ctx, b.id())
		if err != nil {
			return nil, wrap(err, "clone")
		}
		t.last = last
	}
	t.last++
	conn := &Conn{c: c, b: b, N: t.last, uid: uid, state: ConnOpen, dir: "/data", made: time.Now(),
		opens: 1, ctlOpens: 1, ran: make(chan struct{}), ended: make(chan struct{})}
	t.byN[conn.N] = conn
	return conn, nil
}

// Cmd finds connection n of the bot.
// Made is when the connection was made (clone opened).
func (k *Conn) Made() time.Time { return k.made }

func (c *Controller) Cmd(name string, n int) (*Conn, error) {
	b, err := c.get(name)
	if err != nil {
		return nil, err
	}
	t := b.connTable()
	t.mu.Lock()
	conn := t.byN[n]
	t.mu.Unlock()
	if conn == nil {
		return nil, errorf(KindNotFound, "bot %q has no connection %d", name, n)
	}
	return conn, nil
}

// Cmds lists the bot's connection numbers, in order.
func (c *Controller) Cmds(name string) ([]int, error) {
	b, err := c.get(name)
	if err != nil {
		return nil, err
	}
	t := b.connTable()
	t.mu.Lock()
	out := make([]int, 0, len(t.byN))
	for n := range t.byN {
		out = append(out, n)
	}
	t.mu.Unlock()
	sort.Ints(out)
	return out, nil
}

// Open counts an open of one of the connection's files. data and stderr
// have one reader (and data one writer) at a time: EBUSY otherwise.
func (k *Conn) Open(f ConnFile, read, write bool) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.gone {
		return errorf(KindNotFound, "connection %d has ended", k.N)
	}
	switch f {
	case FileData:
		if read && k.dataReader || write && k.dataWriter {
			return errorf(KindBusy, "cmd/%d/data is open for %s already", k.N, map[bool]string{true: "reading", false: "writing"}[read && k.dataReader])
		}
		k.dataReader = k.dataReader || read
		k.dataWriter = k.dataWriter || write
	case FileStderr:
		if read && k.errReader {
			return errorf(KindBusy, "cmd/%d/stderr is open for reading already", k.N)
		}
		k.errReader = k.errReader || read
	case FileCtl:
		k.ctlOpens++
	}
	k.opens++
	return nil
}

// Release counts a close (the kernel's release of the last fd of an
// open). The last writer of data closes the process's stdin; the last
// ctl of a killonclose connection kills it; the last file of all ends
// the connection.
func (k *Conn) Release(f ConnFile, read, write bool) {
	k.mu.Lock()
	switch f {
	case FileData:
		if read {
			k.dataReader = false
		}
		if write {
			k.dataWriter = false
		}
	case FileStderr:
		if read {
			k.errReader = false
		}
	case FileCtl:
		k.ctlOpens--
	}
	k.opens--
	closeStdin := f == FileData && write && k.proc != nil
	kill := f == FileCtl && k.ctlOpens == 0 && k.killOnClose && k.state == ConnRunning
	last := k.opens == 0
	k.mu.Unlock()
	if closeStdin {
		_ = k.proc.CloseStdin()
	}
	if kill || last {
		k.endLater()
	}
}

// endLater kills what runs of the connection and, once nothing of it is
// open, removes it; off the caller's (the kernel's release) path.
func (k *Conn) endLater() {
	k.c.wg.Add(1)
	go func() {
		defer k.c.wg.Done()
		k.end(k.c.life)
	}()
}

// end: see endLater.
func (k *Conn) end(ctx context.Context) {
	k.mu.Lock()
	proc, state, open := k.proc, k.state, k.opens
	k.mu.Unlock()
	if proc != nil && (state == ConnRunning || open == 0) {
		if err := proc.Signal(context.WithoutCancel(ctx), syscall.SIGKILL); err != nil {
			k.c.log.Warn("cmd: kill", "bot", k.b.name, "n", k.N, "err", err)
		}
	}
	if open > 0 {
		return
	}
	if proc != nil {
		select {
		case <-k.ended: // recorded
		case <-ctx.Done():
		}
		if err := proc.Close(context.WithoutCancel(ctx)); err != nil {
			k.c.log.Warn("cmd: clean up", "bot", k.b.name, "n", k.N, "err", err)
		}
	}
	k.remove()
}

// remove takes the connection out of its bot's table, once nothing of
// it is open.
func (k *Conn) remove() {
	k.mu.Lock()
	if k.opens > 0 || k.gone {
		k.mu.Unlock()
		return
	}
	k.gone = true
	k.mu.Unlock()
	k.closeRan() // readers waiting for an exec that never came
	t := k.b.connTable()
	t.mu.Lock()
	if t.byN[k.N] == k {
		delete(t.byN, k.N)
	}
	t.mu.Unlock()
}

// endAllConns ends the processes of every connection of the bot (the
// controller closing): they are killed and their ends recorded.
func (c *Controller) endAllConns(ctx context.Context, b *bot) {
	t := b.connTable()
	t.mu.Lock()
	all := make([]*Conn, 0, len(t.byN))
	for _, k := range t.byN {
		all = append(all, k)
	}
	t.mu.Unlock()
	for _, k := range all {
		k.mu.Lock()
		proc := k.proc
		k.mu.Unlock()
		if proc == nil {
			continue
		}
		_ = proc.Signal(ctx, syscall.SIGKILL)
		select {
		case <-k.ended:
		case <-ctx.Done():
		}
		_ = proc.Close(ctx)
	}
}

// Status renders the connection's status file, one `key value` a line.
func (k *Conn) Status() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var sb strings.Builder
	line := func(key, v string) { sb.WriteString(key + " " + v + "\n") }
	line("cmd", "cmd/"+strconv.Itoa(k.N))
	line("open", strconv.Itoa(k.opens))
	line("state", string(k.state))
	line("dir", k.dir)
	if len(k.argv) > 0 {
		line("argv", shquote.Join(k.argv))
	}
	line("uid", strconv.Itoa(int(k.uid)))
	if k.killOnClose {
		line("killonclose", "yes")
	}
	if k.proc != nil {
		line("pid", strconv.Itoa(int(k.proc.Pid)))
		line("started", k.started.UTC().Format(time.RFC3339Nano))
	}
	if k.exit != nil {
		line("status", k.exit.String())
		line("ended", k.exit.At.UTC().Format(time.RFC3339Nano))
	}
	if k.stderr != nil {
		if d := k.stderr.droppedBytes(); d > 0 {
			line("stderr-dropped", strconv.FormatInt(d, 10))
		}
	}
	if k.lastErr != "" {
		line("error", strings.ReplaceAll(k.lastErr, "\n", " "))
	}
	return sb.String()
}

// Number is "N\n", what reading the clone file gives.
func (k *Conn) Number() string { return strconv.Itoa(k.N) + "\n" }

// newExecID names a connection's process in containerd: its number and
// a nonce (a number is never reused, but a bot's records can outlive a
// wiped store).
func newExecID(n int) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("cmd-%d-%s", n, hex.EncodeToString(b[:]))
}
