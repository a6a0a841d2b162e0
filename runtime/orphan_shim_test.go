package runtime_test

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/memohfs/memohfs/internal/testenv"
	"github.com/memohfs/memohfs/runtime"
	"golang.org/x/sys/unix"
)

// orphan is what a create cut off between containerd and the shim leaves.
type orphan struct{ shim, init int }

// orphaned makes the bot a task (created, not started) and has
// containerd lose it, as when a create is cut off between containerd and
// the shim: containerd gave up on the shim and removed its bundle, the
// shim made the container anyway. Here the bundle goes while the task is
// made, and containerd forgets the shim when the caller restarts it.
func (f *fixture) orphaned(bot string) orphan {
	f.t.Helper()
	ctx := namespacesCtx(f)
	id := runtime.ContainerID(bot)
	ctr, err := f.rt.Client().LoadContainer(ctx, id)
	if err != nil {
		f.t.Fatal(err)
	}
	task, err := ctr.NewTask(ctx, cio.NullIO)
	if err != nil {
		f.t.Fatal(err)
	}
	shims := testenv.ShimsOf(f.cfg.Namespace, id)
	if len(shims) != 1 {
		f.t.Fatalf("shims of %s: %v", id, shims)
	}
	bundle, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(shims[0]), "cwd"))
	if err != nil {
		f.t.Fatal(err)
	}
	if err := unix.Unmount(filepath.Join(bundle, "rootfs"), unix.MNT_DETACH); err != nil {
		f.t.Fatal(err)
	}
	if err := os.RemoveAll(bundle); err != nil {
		f.t.Fatal(err)
	}
	return orphan{shim: shims[0], init: int(task.Pid())}
}

// running reports whether pid is a live process (not a zombie).
func running(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	return err == nil && len(b) > 0
}

// TestOrphanedShim: a shim and a runc container containerd holds no task
// for (a kill -9 of memohfs in the middle of a start can leave them; the
// shim runs for ever and a new task is refused) are ended by start and by
// stop. Not parallel: it restarts the package's containerd.
func TestOrphanedShim(t *testing.T) {
	f := newFixture(t)
	f.bot("ostart", loop)
	f.bot("ostop", loop)
	orphans := map[string]orphan{"ostart": f.orphaned("ostart"), "ostop": f.orphaned("ostop")}
	f.env.Containerd.Restart(t)
	ctx := namespacesCtx(f)
	for bot, o := range orphans {
		id := runtime.ContainerID(bot)
		_, err := f.rt.Client().TaskService().Get(ctx, &tasks.GetRequest{ContainerID: id})
		if err == nil || err.Error() != "rpc error: code = NotFound desc = task "+id+" not found" {
			t.Fatalf("containerd still knows the task of %s: %v", id, err)
		}
		if !running(o.shim) || !running(o.init) || !slices.Contains(testenv.ShimsOf(f.cfg.Namespace, id), o.shim) {
			t.Fatalf("%s: the orphaned shim %d or init %d does not run", id, o.shim, o.init)
		}
	}

	ti := f.start("ostart")
	if ti.State != runtime.TaskRunning {
		t.Fatalf("start over an orphaned shim: %+v", ti)
	}
	if _, err := f.rt.Stop(f.ctx, "ostart", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if st, err := f.rt.Stop(f.ctx, "ostop", time.Second); err != nil || st.State != runtime.TaskNone {
		t.Fatalf("stop over an orphaned shim: %+v %v", st, err)
	}
	for bot, o := range orphans {
		id := runtime.ContainerID(bot)
		testenv.Eventually(t, time.Minute, "nothing of "+id+" runs", func() bool {
			return !running(o.shim) && !running(o.init) && len(testenv.ShimsOf(f.cfg.Namespace, id)) == 0
		})
		if _, err := os.Stat(filepath.Join(f.cfg.RuncRoot, f.cfg.Namespace, id)); !os.IsNotExist(err) {
			t.Errorf("runc still has %s: %v", id, err)
		}
	}
}
