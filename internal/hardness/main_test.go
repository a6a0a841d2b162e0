package hardness

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/memohfs/memohfs/control"
	"github.com/memohfs/memohfs/fsnodes"
	"github.com/memohfs/memohfs/internal/testenv"
	"github.com/memohfs/memohfs/runtime"
	"github.com/memohfs/memohfs/store"
)

func TestMain(m *testing.M) {
	testenv.Main(m, testenv.Needs{Containerd: true, Postgres: true})
}

// soak says whether to run the long variants (make soak).
func soak() bool { return os.Getenv("MEMOHFS_SOAK") != "" }

// count is n, or soakN under make soak.
func count(n, soakN int) int {
	if soak() {
		return soakN
	}
	return n
}

// stack is one test's memohfs: runtime, store, controller and mount.
type stack struct {
	t    *testing.T
	env  *testenv.Env
	rt   *runtime.Containerd
	cfg  runtime.Config
	st   *store.Store
	c    *control.Controller
	fs   *fsnodes.Mounted
	mnt  string
	root string // data root
}

type stackOptions struct {
	FS fsnodes.Options
	// DatabaseURL, when set, is used instead of a fresh database on the
	// run's cluster (an outage test brings its own cluster).
	DatabaseURL string
}

func newStack(t *testing.T, o stackOptions) *stack {
	t.Helper()
	env := testenv.Get(t)
	rt, cfg := env.Runtime(t)
	ctx := t.Context()
	if _, err := rt.EnsureImage(ctx); err != nil {
		t.Fatal(err)
	}
	url := o.DatabaseURL
	if url == "" {
		url = env.Database(t)
	}
	st, err := store.Open(ctx, url, store.Options{ConnectTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	dir := env.TempDir(t)
	if err := os.Chmod(dir, 0o755); err != nil { // other users reach the mount below it
		t.Fatal(err)
	}
	s := &stack{t: t, env: env, rt: rt, cfg: cfg, st: st, root: filepath.Join(dir, "root"), mnt: filepath.Join(dir, "mnt")}
	if err := os.MkdirAll(s.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	s.c, err = control.New(ctx, rt, st, control.Options{DataRoot: s.root, StopGrace: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.c.Close)
	t.Cleanup(func() { rt.UnmountAll(context.Background()) })
	o.FS.DataBinds = testenv.DataBinds() // the suites run on both paths
	m, err := fsnodes.Mount(s.mnt, s.c, o.FS)
	if err != nil {
		t.Fatal(err)
	}
	s.fs = m
	t.Cleanup(func() {
		if err := m.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
			testenv.AbortFUSE(s.mnt)
		}
	})
	return s
}

func (s *stack) path(p ...string) string { return filepath.Join(append([]string{s.mnt}, p...)...) }

// hostData is the host dir behind a bot's data/.
func (s *stack) hostData(bot string) string { return s.c.DataDir(bot) }

// ctl writes text to a bot's ctl as one write, as root, and returns the
// error (an *os.PathError with the errno).
func (s *stack) ctl(bot, text string) error {
	f, err := os.OpenFile(s.path(bot, "ctl"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.Write([]byte(text))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (s *stack) mustCtl(bot, text string) {
	s.t.Helper()
	if err := s.ctl(bot, text); err != nil {
		s.t.Fatalf("%s > %s/ctl: %v (err: %s)", text, bot, err, s.read(bot, "err"))
	}
}

// read reads a file whole; O_NONBLOCK, so events gives what it has and
// ends instead of waiting for more.
func (s *stack) read(p ...string) string {
	f, err := os.OpenFile(s.path(p...), os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return string(b)
}

func (s *stack) status(bot string) control.Status {
	s.t.Helper()
	b, err := os.ReadFile(s.path(bot, "status"))
	if err != nil {
		s.t.Fatal(err)
	}
	st, err := control.ParseStatus(string(b))
	if err != nil {
		s.t.Fatal(err)
	}
	return st
}

// exec runs a command in a running bot and returns its output and code.
func (s *stack) exec(bot string, args ...string) (string, int) {
	s.t.Helper()
	var out bytes.Buffer
	code, err := s.rt.Exec(s.t.Context(), bot, args, &out, &out)
	if err != nil {
		s.t.Fatalf("exec in %s: %v", bot, err)
	}
	return out.String(), code
}

// check runs the controller's consistency check and fails on a problem.
func (s *stack) check(what string) control.CheckReport {
	s.t.Helper()
	rep, err := s.c.Check(s.t.Context())
	if err != nil {
		s.t.Fatalf("%s: check: %v", what, err)
	}
	if !rep.OK() {
		s.t.Fatalf("%s: check: %s", what, rep)
	}
	return rep
}

// asUser runs a shell script as uid (gid = uid), with $M the mount.
func (s *stack) asUser(uid uint32, script string) (string, error) {
	return testenv.AsUser(uid, s.mnt, script)
}

// errnoOf digs the errno out of an error from a file operation.
func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	for err != nil {
		if x, ok := err.(syscall.Errno); ok {
			return x
		}
		switch x := err.(type) {
		case *os.PathError:
			err = x.Err
		case *os.LinkError:
			err = x.Err
		case *os.SyscallError:
			err = x.Err
		default:
			return e
		}
	}
	return e
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// waitFor is testenv.Eventually.
var waitFor = testenv.Eventually
