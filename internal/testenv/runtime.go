package testenv

import (
	"testing"
	"time"

	"github.com/memohfs/memohfs/runtime"
)

// Namespace returns a containerd namespace of the test's own. When the
// test ends everything in it is removed (tasks, containers with their CNI
// and netns, snapshots, images, leases, content) and the namespace too.
func (e *Env) Namespace(t testing.TB) string {
	t.Helper()
	if e.Containerd == nil {
		t.Fatal("testenv: this package did not ask for containerd")
	}
	ns := e.unique(t, "t", 60)
	t.Cleanup(func() {
		ctx, cancel := ctxTimeout(2 * time.Minute)
		defer cancel()
		client, err := e.Containerd.client()
		if err != nil {
			t.Errorf("sweep namespace %s: %v", ns, err)
			return
		}
		defer client.Close()
		if err := sweepNamespace(ctx, client, ns, e.Net, false); err != nil {
			t.Errorf("sweep namespace %s: %v", ns, err)
		}
	})
	return ns
}

// RuntimeConfig is a runtime configuration on the run's daemon and bridge
// with a namespace and a state dir of the test's own.
func (e *Env) RuntimeConfig(t testing.TB) runtime.Config {
	t.Helper()
	// Cleanups run last-in first-out: the namespace sweep (which needs the
	// runc root in the state dir) must come before the dir is removed.
	state := e.TempDir(t)
	ns := e.Namespace(t)
	return runtime.Config{
		Address:      e.Containerd.Address(),
		Namespace:    ns,
		ImageArchive: e.ImageArchive,
		StateDir:     state,
		Network:      e.Net.Config(),
	}
}

// Runtime connects a runtime for the test (see RuntimeConfig).
func (e *Env) Runtime(t testing.TB) (*runtime.Containerd, runtime.Config) {
	t.Helper()
	cfg := e.RuntimeConfig(t)
	rt, err := runtime.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt, rt.Config()
}
