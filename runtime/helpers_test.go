package runtime_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/memohfs/memohfs/internal/testenv"
	"github.com/memohfs/memohfs/runtime"
)

// loop keeps a bot alive and exits 0 on SIGTERM, like the default image.
const loop = `trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done`

type fixture struct {
	t   *testing.T
	env *testenv.Env
	rt  *runtime.Containerd
	cfg runtime.Config
	ctx context.Context
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	env := testenv.Get(t)
	rt, cfg := env.Runtime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	f := &fixture{t: t, env: env, rt: rt, cfg: cfg, ctx: ctx}
	if _, err := rt.EnsureImage(ctx); err != nil {
		t.Fatal(err)
	}
	return f
}

// bot creates a bot with a fresh data dir running script under sh -c.
func (f *fixture) bot(name, script string) (runtime.ContainerInfo, string) {
	f.t.Helper()
	data := filepath.Join(f.env.TempDir(f.t), "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		f.t.Fatal(err)
	}
	spec := runtime.BotSpec{Bot: name, DataDir: data}
	if script != "" {
		spec.Args = []string{"/bin/sh", "-c", script}
	}
	info, err := f.rt.Create(f.ctx, spec)
	if err != nil {
		f.t.Fatalf("create %s: %v", name, err)
	}
	return info, data
}

func (f *fixture) start(bot string) runtime.TaskInfo {
	f.t.Helper()
	ti, err := f.rt.Start(f.ctx, bot)
	if err != nil {
		f.t.Fatalf("start %s: %v", bot, err)
	}
	return ti
}

func (f *fixture) exec(bot string, args ...string) (string, int) {
	f.t.Helper()
	var out, errb bytes.Buffer
	code, err := f.rt.Exec(f.ctx, bot, args, &out, &errb)
	if err != nil {
		f.t.Fatalf("exec %v in %s: %v", args, bot, err)
	}
	return out.String() + errb.String(), code
}

// waitFile waits until path exists and returns its content.
func waitFile(t *testing.T, path string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b, err := os.ReadFile(path)
		if err == nil && len(b) > 0 {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear within %s (last error %v)", path, timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func wantClass(t *testing.T, err error, class string) {
	t.Helper()
	checks := map[string]func(error) bool{
		"not found":           errdefs.IsNotFound,
		"already exists":      errdefs.IsAlreadyExists,
		"failed precondition": errdefs.IsFailedPrecondition,
		"invalid argument":    errdefs.IsInvalidArgument,
		"unavailable":         errdefs.IsUnavailable,
	}
	if err == nil {
		t.Fatalf("want a %s error, got nil", class)
	}
	if !checks[class](err) {
		t.Fatalf("want a %s error, got %v", class, err)
	}
}

// leases returns the IPAM leases the test's namespace holds.
func leases(cfg runtime.Config) []string {
	all, _ := runtime.IPAMLeases(cfg.Network)
	var out []string
	for ip, id := range all {
		if strings.HasPrefix(id, cfg.Namespace+".") {
			out = append(out, ip)
		}
	}
	return out
}

func netnsFiles(cfg runtime.Config) []string {
	entries, _ := os.ReadDir(cfg.NetNSDir)
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func namespacesCtx(f *fixture) context.Context {
	return namespaces.WithNamespace(f.ctx, f.cfg.Namespace)
}

func withKill() containerd.ProcessDeleteOpts { return containerd.WithProcessKill }
