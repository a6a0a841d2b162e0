package runtime_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/memohfs/memohfs/internal/testenv"
	"github.com/memohfs/memohfs/runtime"
)

// TestBadInput: each refusal is a typed error control can map to errno.
func TestBadInput(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	data := f.env.TempDir(t)

	_, err := f.rt.Create(f.ctx, runtime.BotSpec{Bot: "Bad/Name", DataDir: data})
	wantClass(t, err, "invalid argument")
	_, err = f.rt.Create(f.ctx, runtime.BotSpec{Bot: "ok", DataDir: "relative/dir"})
	wantClass(t, err, "invalid argument")
	_, err = f.rt.Create(f.ctx, runtime.BotSpec{Bot: "ok", DataDir: filepath.Join(data, "missing")})
	wantClass(t, err, "not found")
	_, err = f.rt.Start(f.ctx, "ghost")
	wantClass(t, err, "not found")
	_, err = f.rt.Task(f.ctx, "ghost")
	wantClass(t, err, "not found")
	_, err = f.rt.Stop(f.ctx, "ghost", time.Second)
	wantClass(t, err, "not found")
	_, err = f.rt.Snapshot(f.ctx, "ghost", "s", runtime.SnapshotOptions{})
	wantClass(t, err, "not found")
	_, err = f.rt.Restore(f.ctx, "ghost", "s")
	wantClass(t, err, "not found")

	f.bot("ok", "")
	_, err = f.rt.Create(f.ctx, runtime.BotSpec{Bot: "ok", DataDir: data})
	wantClass(t, err, "already exists")
	_, err = f.rt.Snapshot(f.ctx, "ok", "../x", runtime.SnapshotOptions{})
	wantClass(t, err, "invalid argument")
	_, err = f.rt.Snapshot(f.ctx, "ok", "", runtime.SnapshotOptions{})
	wantClass(t, err, "invalid argument")
	_, err = f.rt.Exec(f.ctx, "ok", []string{"true"}, nil, nil)
	wantClass(t, err, "failed precondition") // not running

	// A failing Sync hook aborts the snapshot and leaves nothing.
	_, err = f.rt.Snapshot(f.ctx, "ok", "aborted", runtime.SnapshotOptions{
		Sync: func(_ context.Context, final bool) error {
			if final {
				return os.ErrPermission
			}
			return nil
		},
	})
	if err == nil {
		t.Fatal("snapshot succeeded despite its Sync hook failing")
	}
	list, err := f.rt.Snapshots(f.ctx, "ok")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range list {
		if s.Role == "snapshot" {
			t.Fatalf("aborted snapshot left %+v", s)
		}
	}
}

// TestUnknownImage: an image that is neither in the store nor in the
// archive is NotFound, and no registry is contacted for it.
func TestUnknownImage(t *testing.T) {
	t.Parallel()
	env := testenv.Get(t)
	cfg := env.RuntimeConfig(t)
	cfg.Image = "docker.io/memohfs/absent:1"
	rt, err := runtime.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	ctx := t.Context()
	_, err = rt.EnsureImage(ctx)
	wantClass(t, err, "not found") // the archive holds the default image only
	_, err = rt.Create(ctx, runtime.BotSpec{Bot: "x", DataDir: env.TempDir(t)})
	wantClass(t, err, "not found")

	cfg.ImageArchive = filepath.Join(env.TempDir(t), "missing.tar")
	rt2, err := runtime.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer rt2.Close()
	_, err = rt2.EnsureImage(ctx)
	wantClass(t, err, "not found")
}

// TestUnavailable: a daemon that is not there is Unavailable, quickly.
func TestUnavailable(t *testing.T) {
	t.Parallel()
	env := testenv.Get(t)
	cfg := env.RuntimeConfig(t)
	cfg.Address = filepath.Join(env.TempDir(t), "no.sock")
	rt, err := runtime.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	_, err = rt.Version(ctx)
	wantClass(t, err, "unavailable")
	_, err = rt.Task(ctx, "any")
	wantClass(t, err, "unavailable")
}

// TestLeftoverNetwork: a task that vanished without a stop (daemon or
// memohfs crash) leaves a lease and a netns; the next start releases them
// before it sets up a new one, and stop leaves none.
func TestLeftoverNetwork(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.bot("crashy", loop)
	first := f.start("crashy")
	// Simulate the crash: kill and delete the task behind the runtime's back.
	ctx := namespacesCtx(f)
	ctr, err := f.rt.Client().LoadContainer(ctx, "memohfs-crashy")
	if err != nil {
		t.Fatal(err)
	}
	task, err := ctr.Task(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := task.Delete(ctx, withKill()); err != nil {
		t.Fatal(err)
	}
	if l := leases(f.cfg); len(l) != 1 {
		t.Fatalf("the simulated crash should leave the lease: %v", l)
	}
	second := f.start("crashy")
	if l, n := leases(f.cfg), netnsFiles(f.cfg); len(l) != 1 || len(n) != 1 {
		t.Fatalf("after restart: leases %v netns %v", l, n)
	}
	if second.Pid == first.Pid {
		t.Fatal("same pid after restart")
	}
	if _, err := f.rt.Stop(f.ctx, "crashy", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if l, n := leases(f.cfg), netnsFiles(f.cfg); len(l) != 0 || len(n) != 0 {
		t.Fatalf("after stop: leases %v netns %v", l, n)
	}
}
