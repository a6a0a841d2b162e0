package fsnodes_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/memohfs/memohfs/control"
	"github.com/memohfs/memohfs/fsnodes"
	"github.com/memohfs/memohfs/internal/testenv"
	"github.com/memohfs/memohfs/runtime"
	"github.com/memohfs/memohfs/store"
)

// stack is one test's memohfs: runtime, store, controller and mount.
type stack struct {
	t    *testing.T
	env  *testenv.Env
	rt   *runtime.Containerd
	st   *store.Store
	c    *control.Controller
	mnt  string
	root string // data root
	fs   *fsnodes.Mounted
	// binds: data/ is bound over its FUSE node (fsnodes.Options.DataBinds)
	binds bool
}

// newStack mounts with data/ on this run's path (testenv.DataBinds).
func newStack(t *testing.T, opts fsnodes.Options) *stack {
	t.Helper()
	opts.DataBinds = testenv.DataBinds()
	return newStackOn(t, opts)
}

// newStackOn mounts with opts as given (DataBinds too): for tests of one
// path only.
func newStackOn(t *testing.T, opts fsnodes.Options) *stack {
	t.Helper()
	env := testenv.Get(t)
	rt, _ := env.Runtime(t)
	ctx := t.Context()
	if _, err := rt.EnsureImage(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, env.Database(t), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	dir := env.TempDir(t)
	s := &stack{t: t, env: env, rt: rt, st: st, root: filepath.Join(dir, "root"), mnt: filepath.Join(dir, "mnt"), binds: opts.DataBinds}
	if err := os.MkdirAll(s.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	s.c, err = control.New(ctx, rt, st, control.Options{DataRoot: s.root, StopGrace: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.c.Close)
	t.Cleanup(func() { rt.UnmountAll(context.Background()) })
	m, err := fsnodes.Mount(s.mnt, s.c, opts)
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

// sh runs a shell command (outside the mount dir) and returns its output.
func (s *stack) sh(script string) (string, error) {
	s.t.Helper()
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), "M="+s.mnt)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (s *stack) mustSh(script string) string {
	s.t.Helper()
	out, err := s.sh(script)
	if err != nil {
		s.t.Fatalf("%s: %v\n%s", script, err, out)
	}
	return out
}

func (s *stack) read(p ...string) string {
	s.t.Helper()
	b, err := os.ReadFile(s.path(p...))
	if err != nil {
		s.t.Fatalf("read %s: %v", filepath.Join(p...), err)
	}
	return string(b)
}

// ctl writes text to a bot's ctl as one write and returns the errno.
func (s *stack) ctl(bot, text string) error {
	f, err := os.OpenFile(s.path(bot, "ctl"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.Write([]byte(text))
	return err
}

func (s *stack) mustCtl(bot, text string) {
	s.t.Helper()
	if err := s.ctl(bot, text); err != nil {
		s.t.Fatalf("ctl %q: %v (err: %s)", text, err, s.read(bot, "err"))
	}
}

// status parses a bot's status file.
func (s *stack) status(bot string) map[string]string {
	s.t.Helper()
	kv := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(s.read(bot, "status")), "\n") {
		k, v, _ := strings.Cut(line, " ")
		kv[k] = v
	}
	return kv
}

func errnoIs(err error, want syscall.Errno) bool { return errors.Is(err, want) }

// eventually is testenv.Eventually.
var eventually = testenv.Eventually

// exec runs a command in the bot's container (stdout and stderr kept
// apart: one buffer for both loses output).
func (s *stack) exec(bot string, args ...string) (string, int) {
	s.t.Helper()
	var out, errb bytes.Buffer
	code, err := s.rt.Exec(s.t.Context(), bot, args, &out, &errb)
	if err != nil {
		s.t.Fatalf("exec %v: %v", args, err)
	}
	return out.String() + errb.String(), code
}

// with gives a view of the stack that reports to t (a subtest).
func (s *stack) with(t *testing.T) *stack {
	c := *s
	c.t = t
	return &c
}

// bound reports whether bot's data/ is served by a bind (the kernel)
// rather than by FUSE. In a run with binds it first waits for the bind
// (made just after mkdir returns, outside the request).
func (s *stack) bound(bot string) bool {
	s.t.Helper()
	if !s.binds {
		return false
	}
	var mnt syscall.Stat_t
	if err := syscall.Stat(s.mnt, &mnt); err != nil {
		s.t.Fatal(err)
	}
	eventually(s.t, time.Minute, bot+"'s data/ bound", func() bool {
		var st syscall.Stat_t
		return syscall.Stat(s.path(bot, "data"), &st) == nil && st.Dev != mnt.Dev && s.status(bot)["data-path"] == "bind"
	})
	return true
}

// mkbot makes a bot as root and waits until its data/ is on this run's
// path.
func (s *stack) mkbot(bot string) {
	s.t.Helper()
	if err := os.Mkdir(s.path(bot), 0o755); err != nil {
		s.t.Fatalf("mkdir %s: %v", bot, err)
	}
	s.bound(bot)
}
