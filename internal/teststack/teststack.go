// Package teststack runs one test's whole memohfs for the integration
// tests of fsnodes and hardness: a runtime on the run's containerd (a
// namespace of the test's own), a store on a database of its own, a
// controller and the FUSE mount, all torn down with the test. It builds
// on internal/testenv, which holds the run's daemons.
package teststack

import (
	"bytes"
	"context"
	"io"
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

// Options says how New builds the stack. The zero value is the default
// stack, with data/ on this run's path.
type Options struct {
	// FS is how the tree is mounted. FS.DataBinds is replaced by this
	// run's path (testenv.DataBinds) unless ForceDataPath is set.
	FS fsnodes.Options
	// ForceDataPath mounts with FS.DataBinds as given: for tests of one
	// data path only.
	ForceDataPath bool
	// Control is the controller's options. DataRoot is always the
	// stack's own; StopGrace is 5s when zero.
	Control control.Options
	// Store is the store's options.
	Store store.Options
	// DatabaseURL, when set, is used instead of a fresh database on the
	// run's cluster (an outage test brings its own cluster).
	DatabaseURL string
}

// Stack is one test's memohfs: runtime, store, controller and mount.
type Stack struct {
	T             *testing.T
	Env           *testenv.Env
	Runtime       *runtime.Containerd
	RuntimeConfig runtime.Config
	Store         *store.Store
	Control       *control.Controller
	FS            *fsnodes.Mounted
	Mnt           string // the mount point
	Root          string // the data root (control.Options.DataRoot)
	// Binds: data/ is bound over its FUSE node (fsnodes.Options.DataBinds).
	Binds bool
}

// New starts a stack for t; everything it starts is stopped, and the
// tree unmounted, when t ends.
func New(t *testing.T, o Options) *Stack {
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
	st, err := store.Open(ctx, url, o.Store)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	dir := env.TempDir(t)
	if err := os.Chmod(dir, 0o755); err != nil { // other users reach the mount below it
		t.Fatal(err)
	}
	if !o.ForceDataPath {
		o.FS.DataBinds = testenv.DataBinds()
	}
	s := &Stack{T: t, Env: env, Runtime: rt, RuntimeConfig: cfg, Store: st,
		Root: filepath.Join(dir, "root"), Mnt: filepath.Join(dir, "mnt"), Binds: o.FS.DataBinds}
	if err := os.MkdirAll(s.Mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	copts := o.Control
	copts.DataRoot = s.Root
	if copts.StopGrace == 0 {
		copts.StopGrace = 5 * time.Second
	}
	s.Control, err = control.New(ctx, rt, st, copts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Control.Close)
	t.Cleanup(func() { rt.UnmountAll(context.Background()) })
	m, err := fsnodes.Mount(s.Mnt, s.Control, o.FS)
	if err != nil {
		t.Fatal(err)
	}
	s.FS = m
	t.Cleanup(func() {
		if err := m.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
			testenv.AbortFUSE(s.Mnt)
		}
	})
	return s
}

// With gives a view of the stack that reports to t (a subtest).
func (s *Stack) With(t *testing.T) *Stack {
	c := *s
	c.T = t
	return &c
}

// Path is p under the mount.
func (s *Stack) Path(p ...string) string { return filepath.Join(append([]string{s.Mnt}, p...)...) }

// HostData is the host dir behind a bot's data/.
func (s *Stack) HostData(bot string) string { return s.Control.DataDir(bot) }

// Read reads a file of the mount whole, and fails the test if it cannot.
func (s *Stack) Read(p ...string) string {
	s.T.Helper()
	b, err := os.ReadFile(s.Path(p...))
	if err != nil {
		s.T.Fatalf("read %s: %v", filepath.Join(p...), err)
	}
	return string(b)
}

// ReadOrError reads a file of the mount whole without failing the test:
// the error, in parentheses, stands for what it could not read. O_NONBLOCK,
// so events gives what it has and ends instead of waiting for more. For
// messages and for comparing states.
func (s *Stack) ReadOrError(p ...string) string {
	f, err := os.OpenFile(s.Path(p...), os.O_RDONLY|syscall.O_NONBLOCK, 0)
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

// Ctl writes text to a bot's ctl as one write, as root, and returns the
// error of the write or else of the close (an *os.PathError with the
// errno).
func (s *Stack) Ctl(bot, text string) error {
	f, err := os.OpenFile(s.Path(bot, "ctl"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.Write([]byte(text))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// MustCtl is Ctl, and fails the test (with the bot's err) if it fails.
func (s *Stack) MustCtl(bot, text string) {
	s.T.Helper()
	if err := s.Ctl(bot, text); err != nil {
		s.T.Fatalf("%s > %s/ctl: %v (err: %s)", text, bot, err, s.ReadOrError(bot, "err"))
	}
}

// Status parses a bot's status file (control.ParseStatus).
func (s *Stack) Status(bot string) control.Status {
	s.T.Helper()
	b, err := os.ReadFile(s.Path(bot, "status"))
	if err != nil {
		s.T.Fatal(err)
	}
	st, err := control.ParseStatus(string(b))
	if err != nil {
		s.T.Fatal(err)
	}
	return st
}

// StatusFields is a bot's status file as it is written: its `key value`
// lines as a map, `-` for an empty value, keys of the tree's own
// (data-path) included.
func (s *Stack) StatusFields(bot string) map[string]string {
	s.T.Helper()
	kv := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(s.Read(bot, "status")), "\n") {
		k, v, _ := strings.Cut(line, " ")
		kv[k] = v
	}
	return kv
}

// Check runs the controller's consistency check and fails on a problem.
func (s *Stack) Check(what string) control.CheckReport {
	s.T.Helper()
	rep, err := s.Control.Check(s.T.Context())
	if err != nil {
		s.T.Fatalf("%s: check: %v", what, err)
	}
	if !rep.OK() {
		s.T.Fatalf("%s: check: %s", what, rep)
	}
	return rep
}

// Exec runs a command in a running bot's container and returns its
// stdout, then its stderr, and its exit code (the two are gathered apart:
// one buffer for both loses output).
func (s *Stack) Exec(bot string, args ...string) (string, int) {
	s.T.Helper()
	var out, errb bytes.Buffer
	code, err := s.Runtime.Exec(s.T.Context(), bot, args, &out, &errb)
	if err != nil {
		s.T.Fatalf("exec %v: %v", args, err)
	}
	return out.String() + errb.String(), code
}

// Sh runs a shell script as root (outside the mount dir), with $M the
// mount, and returns its combined output.
func (s *Stack) Sh(script string) (string, error) {
	s.T.Helper()
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), "M="+s.Mnt)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// MustSh is Sh, and fails the test if the script fails.
func (s *Stack) MustSh(script string) string {
	s.T.Helper()
	out, err := s.Sh(script)
	if err != nil {
		s.T.Fatalf("%s: %v\n%s", script, err, out)
	}
	return out
}

// AsUser runs a shell script as uid (gid = uid), with $M the mount.
func (s *Stack) AsUser(uid uint32, script string) (string, error) {
	return testenv.AsUser(uid, s.Mnt, script)
}

// Bound reports whether bot's data/ is served by a bind (the kernel)
// rather than by FUSE. In a run with binds it first waits for the bind
// (made just after mkdir returns, outside the request).
func (s *Stack) Bound(bot string) bool {
	s.T.Helper()
	if !s.Binds {
		return false
	}
	var mnt syscall.Stat_t
	if err := syscall.Stat(s.Mnt, &mnt); err != nil {
		s.T.Fatal(err)
	}
	testenv.Eventually(s.T, time.Minute, bot+"'s data/ bound", func() bool {
		var st syscall.Stat_t
		return syscall.Stat(s.Path(bot, "data"), &st) == nil && st.Dev != mnt.Dev && s.StatusFields(bot)["data-path"] == "bind"
	})
	return true
}

// Mkbot makes a bot as root and waits until its data/ is on this run's
// path.
func (s *Stack) Mkbot(bot string) {
	s.T.Helper()
	if err := os.Mkdir(s.Path(bot), 0o755); err != nil {
		s.T.Fatalf("mkdir %s: %v", bot, err)
	}
	s.Bound(bot)
}

// Must fails the test if err is not nil.
func Must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
