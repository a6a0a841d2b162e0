package runtime_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/memohfs/memohfs/internal/testenv"
	"github.com/memohfs/memohfs/runtime"
)

// halfMade gives the bot a task the way a memohfs killed in the middle of
// deleting it leaves one: containerd still holds the task and its shim
// runs, but the shim no longer has the container. It checks that this is
// the state TestCrash ran into (the task out of `ctr tasks ls`, Task
// calling it none, a new task refused AlreadyExists) and returns the
// shim's pid.
func (f *fixture) halfMade(bot string) int {
	f.t.Helper()
	ctx := namespacesCtx(f)
	id := runtime.ContainerID(bot)
	ctr, err := f.rt.Client().LoadContainer(ctx, id)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := ctr.NewTask(ctx, cio.NullIO); err != nil {
		f.t.Fatal(err)
	}
	shim, err := testenv.HalfDeleteTask(ctx, f.cfg.Namespace, id)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := ctr.Task(ctx, nil); !errdefs.IsNotFound(err) {
		f.t.Fatalf("the half-made task is seen: %v", err)
	}
	list, err := f.rt.Client().TaskService().List(ctx, &tasks.ListTasksRequest{})
	if err != nil {
		f.t.Fatal(err)
	}
	for _, p := range list.Tasks {
		if p.ID == id {
			f.t.Fatalf("the half-made task is listed: %+v", p)
		}
	}
	if ti, err := f.rt.Task(f.ctx, bot); err != nil || ti.State != runtime.TaskNone {
		f.t.Fatalf("Task of a half-made task: %+v %v", ti, err)
	}
	if _, err := ctr.NewTask(ctx, cio.NullIO); !errdefs.IsAlreadyExists(err) {
		f.t.Fatalf("a new task next to the half-made one: want AlreadyExists, got %v", err)
	}
	if !slices.Contains(testenv.ShimsOf(f.cfg.Namespace, id), shim) {
		f.t.Fatalf("shim %d of the half-made task does not run: %v", shim, testenv.ShimsOf(f.cfg.Namespace, id))
	}
	return shim
}

// noTask waits until containerd holds no task for the bot and no shim of
// its container runs (a shim exits once its task is deleted).
func (f *fixture) noTask(bot string) {
	f.t.Helper()
	ctx := namespacesCtx(f)
	id := runtime.ContainerID(bot)
	_, err := f.rt.Client().TaskService().Delete(ctx, &tasks.DeleteTaskRequest{ContainerID: id})
	if err == nil || !errdefs.IsNotFound(errgrpc.ToNative(err)) || !strings.Contains(err.Error(), "task "+id+" not found") {
		f.t.Fatalf("containerd still held a task of %s: its delete answered %v", id, err)
	}
	testenv.Eventually(f.t, time.Minute, "no shim of "+id+" runs", func() bool {
		return len(testenv.ShimsOf(f.cfg.Namespace, id)) == 0
	})
}

// TestLeftoverTaskStart: start clears a half-made task (it used to fail
// with "task ...: already exists") and the old shim ends.
func TestLeftoverTaskStart(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.bot("hstart", loop)
	shim := f.halfMade("hstart")
	ti := f.start("hstart")
	if ti.State != runtime.TaskRunning || ti.Pid == 0 {
		t.Fatalf("start over a half-made task: %+v", ti)
	}
	id := runtime.ContainerID("hstart")
	testenv.Eventually(t, time.Minute, "the half-made task's shim ends", func() bool {
		return !slices.Contains(testenv.ShimsOf(f.cfg.Namespace, id), shim)
	})
	if got, err := f.rt.Task(f.ctx, "hstart"); err != nil || got.State != runtime.TaskRunning || got.Pid != ti.Pid {
		t.Fatalf("task after the start: %+v %v", got, err)
	}
	if _, err := f.rt.Stop(f.ctx, "hstart", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	f.noTask("hstart")
}

// TestLeftoverTaskStop: stopping a bot whose task is half made ends the
// task and its shim (it used to succeed and leave both), and the bot
// starts again.
func TestLeftoverTaskStop(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.bot("hstop", loop)
	f.halfMade("hstop")
	st, err := f.rt.Stop(f.ctx, "hstop", time.Second)
	if err != nil || st.State != runtime.TaskNone {
		t.Fatalf("stop of a half-made task: %+v %v", st, err)
	}
	f.noTask("hstop")
	f.start("hstop")
	if _, err := f.rt.Stop(f.ctx, "hstop", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	f.noTask("hstop")
}

// TestLeftoverTaskDelete: deleting the container of a half-made task ends
// the task first (once the container is gone, containerd can no longer
// delete the task, and its shim would run for ever).
func TestLeftoverTaskDelete(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.bot("hdelete", loop)
	f.halfMade("hdelete")
	if err := f.rt.Delete(f.ctx, "hdelete"); err != nil {
		t.Fatal(err)
	}
	id := runtime.ContainerID("hdelete")
	testenv.Eventually(t, time.Minute, "no shim of "+id+" runs", func() bool {
		return len(testenv.ShimsOf(f.cfg.Namespace, id)) == 0
	})
}

// TestEndLeftoverTask: what reconcile calls for every container ends a
// half-made task and a created one, says so, and leaves a running task
// alone.
func TestEndLeftoverTask(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.bot("hend", loop)
	id := runtime.ContainerID("hend")

	f.halfMade("hend")
	what, err := f.rt.EndLeftoverTask(f.ctx, "hend")
	if err != nil || !strings.Contains(what, id) || !strings.Contains(what, "not described") {
		t.Fatalf("EndLeftoverTask of a half-made task: %q %v", what, err)
	}
	f.noTask("hend")
	if what, err := f.rt.EndLeftoverTask(f.ctx, "hend"); err != nil || what != "" {
		t.Fatalf("EndLeftoverTask with no task: %q %v", what, err)
	}

	// Created and never started: its process (runc's init, waiting to
	// be started) is killed with it.
	ctx := namespacesCtx(f)
	ctr, err := f.rt.Client().LoadContainer(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ctr.NewTask(ctx, cio.NullIO); err != nil {
		t.Fatal(err)
	}
	what, err = f.rt.EndLeftoverTask(f.ctx, "hend")
	if err != nil || !strings.Contains(what, "created") {
		t.Fatalf("EndLeftoverTask of a created task: %q %v", what, err)
	}
	f.noTask("hend")

	ti := f.start("hend")
	if what, err := f.rt.EndLeftoverTask(f.ctx, "hend"); err != nil || what != "" {
		t.Fatalf("EndLeftoverTask of a running task: %q %v", what, err)
	}
	if got, err := f.rt.Task(f.ctx, "hend"); err != nil || got.State != runtime.TaskRunning || got.Pid != ti.Pid {
		t.Fatalf("the running task was touched: %+v %v", got, err)
	}
	if _, err := f.rt.Stop(f.ctx, "hend", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	f.noTask("hend")
}
