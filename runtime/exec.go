package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"
	"github.com/memohfs/memohfs/internal/pipeio"
	"golang.org/x/sys/unix"
)

// ExecSpec says what to run in a bot's task.
type ExecSpec struct {
	// ID names the process in containerd; unique within the bot's task
	// while it lives ([A-Za-z0-9] words joined by . _ -).
	ID   string
	Args []string // argv, run with no shell; Args[0] is looked up in PATH
	Dir  string   // working dir in the container; /data when empty
	Env  []string // KEY=VALUE, over the container's process env
}

// ExitInfo says how a process ended.
type ExitInfo struct {
	// Code is the exit code; -1 when a signal ended it or it is unknown.
	Code int
	// Signal ended it. containerd reports a death by signal N as exit
	// code 128+N, so a process that exits with 129..159 by itself reads
	// the same.
	Signal syscall.Signal
	At     time.Time
	// Lost: how it ended is not known (its shim went away first).
	Lost bool
}

func (e ExitInfo) String() string {
	switch {
	case e.Lost:
		return "lost"
	case e.Signal != 0:
		return "signal " + SignalName(e.Signal)
	}
	return fmt.Sprintf("exit %d", e.Code)
}

// exitInfo reads containerd's exit code.
func exitInfo(code uint32, at time.Time) ExitInfo {
	if code > 128 && code < 128+32 {
		return ExitInfo{Code: -1, Signal: syscall.Signal(code - 128), At: at}
	}
	return ExitInfo{Code: int(code), At: at}
}

// Proc is a process ExecStart started, with its streams. Its methods are
// safe for concurrent use; Close must be called once it is no longer
// wanted.
type Proc struct {
	ID  string
	Pid uint32 // on the host

	// Stdout and Stderr are the read ends of its output (FIFOs,
	// non-blocking: use pipeio). StdinFile is the write end of its stdin.
	Stdout, Stderr *os.File

	proc containerd.Process
	tree *procTree
	dir  string // the FIFOs' dir
	// keep holds a reader of the stdin FIFO for the process's life: the
	// shim opens its own reader after Start returns, and a write meeting
	// no reader would fail.
	keep *os.File

	ended     context.Context // ends when the process has ended (exit is set then)
	markEnded context.CancelFunc
	endLife   context.CancelFunc // ends follow's waiting
	exit      ExitInfo
	stdinMu   sync.Mutex
	stdin     *os.File // nil once closed
	closed    sync.Once
}

// Ended is a context that ends with the process (Exit then says how).
func (p *Proc) Ended() context.Context { return p.ended }

// Exit says how the process ended, once it has.
func (p *Proc) Exit() ExitInfo { <-p.ended.Done(); return p.exit }

// CloseStdin gives the process end of file on its stdin: the shim sees
// it once every writer of the FIFO is gone, ours and its own (CloseIO).
func (p *Proc) CloseStdin() error {
	if !p.dropStdin() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.proc.CloseIO(ctx, containerd.WithStdinCloser); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("close stdin of exec %s: %w", p.ID, err)
	}
	return nil
}

// dropStdin closes our end of the stdin FIFO; false if it was closed.
func (p *Proc) dropStdin() bool {
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	if p.stdin == nil {
		return false
	}
	p.stdin.Close()
	p.stdin = nil
	return true
}

// StdinFile is the write end of the process's stdin FIFO, nil once
// closed.
func (p *Proc) StdinFile() *os.File {
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	return p.stdin
}

// Signal sends sig to every process of the tree the command started,
// also those that left it by double-forking (see procTree).
func (p *Proc) Signal(ctx context.Context, sig syscall.Signal) error {
	if p.tree != nil {
		return p.tree.signal(ctx, sig)
	}
	err := p.proc.Kill(ctx, sig)
	if errdefs.IsNotFound(err) {
		return nil
	}
	return err
}

// Close ends what is left of the tree, deletes the process from
// containerd and removes its FIFOs and cgroup.
func (p *Proc) Close(ctx context.Context) error {
	var err error
	p.closed.Do(func() {
		ctx, cancel := detach(ctx)
		defer cancel()
		var errs []error
		if p.tree != nil {
			errs = append(errs, p.tree.end(ctx))
		}
		if _, derr := p.proc.Delete(ctx, containerd.WithProcessKill); derr != nil && !errdefs.IsNotFound(derr) {
			errs = append(errs, fmt.Errorf("delete exec %s: %w", p.ID, derr))
		}
		p.endLife()
		p.dropStdin() // the process is gone: no CloseIO
		p.keep.Close()
		p.Stdout.Close()
		p.Stderr.Close()
		errs = append(errs, os.RemoveAll(p.dir))
		err = errors.Join(errs...)
	})
	return err
}

// execIO is the cio.IO of an exec whose FIFOs this package opens itself.
type execIO struct{ cfg cio.Config }

func (e *execIO) Config() cio.Config { return e.cfg }
func (e *execIO) Cancel()            {}
func (e *execIO) Wait()              {}
func (e *execIO) Close() error       { return nil }

// ExecStart starts spec in the bot's running task and returns once the
// process runs. Failures: FailedPrecondition when the bot does not run
// (or is paused), NotFound for a command or dir that is not there,
// PermissionDenied for one that cannot be run. Nothing is left behind
// by a failure.
func (c *Containerd) ExecStart(ctx context.Context, bot string, spec ExecSpec) (_ *Proc, err error) {
	defer native(&err)
	if len(spec.Args) == 0 {
		return nil, fmt.Errorf("exec: no command: %w", errdefs.ErrInvalidArgument)
	}
	ctx = c.ns(ctx)
	ctr, err := c.load(ctx, bot)
	if err != nil {
		return nil, err
	}
	task, err := ctr.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("bot %q is not running: %w", bot, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return nil, err
	}
	st, err := task.Status(ctx)
	if err != nil {
		return nil, err
	}
	if st.Status != containerd.Running {
		return nil, fmt.Errorf("bot %q is %s: %w", bot, st.Status, errdefs.ErrFailedPrecondition)
	}
	ospec, err := ctr.Spec(ctx)
	if err != nil {
		return nil, err
	}
	pspec := *ospec.Process
	pspec.Terminal = false
	pspec.Args = spec.Args
	pspec.Cwd = spec.Dir
	if pspec.Cwd == "" {
		pspec.Cwd = "/data"
	}
	marker := markerEnv + "=" + ctr.ID() + "/" + spec.ID
	pspec.Env = mergeEnv(ospec.Process.Env, append(append([]string(nil), spec.Env...), marker))

	dir := filepath.Join(c.cfg.FIFODir, ctr.ID()+"."+spec.ID)
	fifos, err := makeFIFOs(dir)
	if err != nil {
		return nil, fmt.Errorf("exec in bot %q: %w", bot, err)
	}
	defer func() {
		if err != nil {
			fifos.closeAll()
			os.RemoveAll(dir)
		}
	}()
	proc, err := task.Exec(ctx, spec.ID, &pspec, func(string) (cio.IO, error) {
		return &execIO{cfg: cio.Config{Stdin: fifos.paths[0], Stdout: fifos.paths[1], Stderr: fifos.paths[2]}}, nil
	})
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("bot %q is not running: %w", bot, errdefs.ErrFailedPrecondition)
		}
		return nil, fmt.Errorf("exec in bot %q: %w", bot, err)
	}
	life, endLife := context.WithCancel(context.WithoutCancel(ctx))
	statusC, err := proc.Wait(life)
	if err != nil {
		endLife()
		dctx, cancel := detach(ctx)
		defer cancel()
		_, _ = proc.Delete(dctx, containerd.WithProcessKill)
		return nil, fmt.Errorf("exec in bot %q: %w", bot, err)
	}
	if err := proc.Start(ctx); err != nil {
		endLife()
		dctx, cancel := detach(ctx)
		defer cancel()
		_, _ = proc.Delete(dctx, containerd.WithProcessKill)
		return nil, startError(bot, spec, err)
	}
	// The shim holds its output ends now: let go of the stand-ins that
	// kept the FIFOs from reading end of file before it came.
	keep := fifos.dropStandIns()
	p := &Proc{ID: spec.ID, Pid: proc.Pid(), stdin: fifos.stdin, Stdout: fifos.stdout, Stderr: fifos.stderr,
		proc: proc, dir: dir, keep: keep, endLife: endLife}
	p.ended, p.markEnded = context.WithCancel(context.Background())
	pipeio.Grow(p.Stdout, 1<<20)
	pipeio.Grow(p.Stderr, 1<<20)
	if fz := c.freezerOf(ctx, ctr); fz != nil {
		p.tree = newProcTree(fz, spec.ID, marker, int(p.Pid))
		if terr := p.tree.adopt(); terr != nil {
			slog.WarnContext(ctx, "exec: cannot give the command its own cgroup; killing it reaches only what it starts under its own pid and env",
				"bot", bot, "exec", spec.ID, "err", terr)
		}
	}
	go p.follow(life, endLife, statusC)
	return p, nil
}

// follow waits for the process to end; a wait the connection to
// containerd broke is taken up again from the process's status.
func (p *Proc) follow(life context.Context, endLife context.CancelFunc, statusC <-chan containerd.ExitStatus) {
	defer endLife()
	defer p.markEnded()
	for {
		code, at, err := (<-statusC).Result()
		if err == nil {
			p.exit = exitInfo(code, at)
			return
		}
		for statusC = nil; statusC == nil; {
			select {
			case <-life.Done():
				p.exit = ExitInfo{Code: -1, Lost: true, At: time.Now()}
				return
			case <-time.After(200 * time.Millisecond): // a restarting containerd
			}
			st, serr := p.proc.Status(life)
			switch {
			case errdefs.IsNotFound(serr):
				p.exit = ExitInfo{Code: -1, Lost: true, At: time.Now()}
				return
			case serr == nil && st.Status == containerd.Stopped:
				p.exit = exitInfo(st.ExitStatus, st.ExitTime)
				return
			case serr == nil:
				if sc, werr := p.proc.Wait(life); werr == nil {
					statusC = sc
				}
			}
		}
	}
}

// startError says why runc could not start the command, in the class a
// caller can act on.
func startError(bot string, spec ExecSpec, err error) error {
	msg := err.Error()
	// runc's words are at the end of a long chain: keep them.
	if i := strings.LastIndex(msg, "exec: "); i >= 0 {
		msg = msg[i:]
	} else if i := strings.LastIndex(msg, "chdir to cwd"); i >= 0 {
		msg = msg[i:]
	}
	msg = strings.TrimSuffix(msg, ": unknown")
	low := strings.ToLower(msg)
	var class error = errdefs.ErrUnknown
	switch {
	case strings.Contains(low, "chdir to cwd") || strings.Contains(low, "not a directory"):
		class = errdefs.ErrNotFound
		msg = fmt.Sprintf("dir %q: %s", spec.Dir, msg)
	case strings.Contains(low, "executable file not found") || strings.Contains(low, "no such file or directory"):
		class = errdefs.ErrNotFound
	case strings.Contains(low, "permission denied") || strings.Contains(low, "exec format error") || strings.Contains(low, "is a directory"):
		class = errdefs.ErrPermissionDenied
	}
	return fmt.Errorf("exec in bot %q: %s: %w", bot, msg, class)
}

// markerEnv names the env var each command is started with; its value
// (container/exec id) finds processes of the tree that left it.
const markerEnv = "MEMOHFS_EXEC"

// mergeEnv puts over on base: a KEY in over replaces base's KEY.
func mergeEnv(base, over []string) []string {
	idx := map[string]int{}
	out := make([]string, 0, len(base)+len(over))
	for _, kv := range append(append([]string(nil), base...), over...) {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := idx[k]; ok {
			out[i] = kv
			continue
		}
		idx[k] = len(out)
		out = append(out, kv)
	}
	return out
}

// fifos are an exec's three FIFOs, and stand-ins that hold the other
// end of each until the shim has opened its own: without them the
// output FIFOs would read end of file, and stdin could not be opened
// for writing.
type fifos struct {
	paths                 [3]string
	stdin, stdout, stderr *os.File
	standIns              []*os.File
}

func makeFIFOs(dir string) (*fifos, error) {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	f := &fifos{}
	for i, n := range []string{"stdin", "stdout", "stderr"} {
		f.paths[i] = filepath.Join(dir, n)
		if err := unix.Mkfifo(f.paths[i], 0o600); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("mkfifo: %w", err)
		}
	}
	// stdin: a reader stand-in first, so the writer can open; the
	// outputs: a writer stand-in each, so no read sees end of file yet.
	var err error
	var in, out, errw *os.File
	openTo := func(dst **os.File, path string, flag int) {
		if err == nil {
			*dst, err = pipeio.Open(path, flag)
		}
	}
	openTo(&in, f.paths[0], os.O_RDONLY)
	openTo(&f.stdin, f.paths[0], os.O_WRONLY)
	openTo(&f.stdout, f.paths[1], os.O_RDONLY)
	openTo(&out, f.paths[1], os.O_WRONLY)
	openTo(&f.stderr, f.paths[2], os.O_RDONLY)
	openTo(&errw, f.paths[2], os.O_WRONLY)
	for _, s := range []*os.File{in, out, errw} {
		if s != nil {
			f.standIns = append(f.standIns, s)
		}
	}
	if err != nil {
		f.closeAll()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("open FIFO: %w", err)
	}
	return f, nil
}

// dropStandIns closes the output stand-ins and hands over stdin's.
func (f *fifos) dropStandIns() (stdinReader *os.File) {
	for i, s := range f.standIns {
		if i == 0 {
			stdinReader = s
			continue
		}
		s.Close()
	}
	f.standIns = nil
	return stdinReader
}

func (f *fifos) closeAll() {
	if r := f.dropStandIns(); r != nil {
		r.Close()
	}
	for _, s := range []*os.File{f.stdin, f.stdout, f.stderr} {
		if s != nil {
			s.Close()
		}
	}
}

// SignalName is the short name of sig (KILL, TERM), or its number.
func SignalName(sig syscall.Signal) string {
	if n := unix.SignalName(sig); n != "" {
		return strings.TrimPrefix(n, "SIG")
	}
	return fmt.Sprint(int(sig))
}

// ParseSignal reads a signal by name (KILL, SIGKILL, kill) or number.
func ParseSignal(s string) (syscall.Signal, error) {
	up := strings.ToUpper(s)
	if !strings.HasPrefix(up, "SIG") {
		up = "SIG" + up
	}
	if sig := unix.SignalNum(up); sig != 0 {
		return sig, nil
	}
	var n int
	if _, err := fmt.Sscanf(s, "%d", &n); err == nil && fmt.Sprint(n) == s && n > 0 && n < 65 {
		return syscall.Signal(n), nil
	}
	return 0, fmt.Errorf("no signal %q: %w", s, errdefs.ErrInvalidArgument)
}

// EndExec ends a process a daemon before this one started and lost (by
// its exec id): what is left of its tree is killed, the process deleted
// from containerd, its FIFOs and cgroup removed. It says how the process
// ended when containerd still knew (Lost otherwise).
func (c *Containerd) EndExec(ctx context.Context, bot, id string) (_ ExitInfo, err error) {
	defer native(&err)
	ctx = c.ns(ctx)
	lost := ExitInfo{Code: -1, Lost: true, At: time.Now()}
	ctr, err := c.load(ctx, bot)
	if errdefs.IsNotFound(err) {
		return lost, nil
	}
	if err != nil {
		return ExitInfo{}, err
	}
	defer os.RemoveAll(filepath.Join(c.cfg.FIFODir, ctr.ID()+"."+id))
	task, err := ctr.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return lost, nil
	}
	if err != nil {
		return ExitInfo{}, err
	}
	if fz := c.freezerOf(ctx, ctr); fz != nil {
		if err := newProcTree(fz, id, markerEnv+"="+ctr.ID()+"/"+id, 0).end(ctx); err != nil {
			return ExitInfo{}, err
		}
	}
	proc, err := task.LoadProcess(ctx, id, nil)
	if errdefs.IsNotFound(err) {
		return lost, nil
	}
	if err != nil {
		return ExitInfo{}, err
	}
	out := lost
	if st, err := proc.Status(ctx); err == nil && st.Status == containerd.Stopped {
		out = exitInfo(st.ExitStatus, st.ExitTime)
	}
	es, err := proc.Delete(ctx, containerd.WithProcessKill)
	if err != nil && !errdefs.IsNotFound(err) {
		return ExitInfo{}, fmt.Errorf("delete exec %s: %w", id, err)
	}
	if out.Lost && es != nil && es.Error() == nil {
		out = exitInfo(es.ExitCode(), es.ExitTime())
	}
	return out, nil
}
