package control_test

import (
	"context"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/memohfs/memohfs/internal/testenv"
	"github.com/memohfs/memohfs/runtime"
	"github.com/memohfs/memohfs/store"
)

// halfMade leaves containerd holding a task of the bot that its shim no
// longer has, as a memohfs killed in the middle of deleting the task
// does; with created set it first makes the task (created, never
// started), else the bot's task must have exited. It returns the shim.
func (r *rig) halfMade(bot string, created bool) int {
	r.t.Helper()
	id := runtime.ContainerID(bot)
	if created {
		ctr, err := r.rt.Client().LoadContainer(r.ns(), id)
		if err != nil {
			r.t.Fatal(err)
		}
		if _, err := ctr.NewTask(r.ns(), cio.NullIO); err != nil {
			r.t.Fatal(err)
		}
	}
	shim, err := testenv.HalfDeleteTask(r.ns(), r.rt.Config().Namespace, id)
	if err != nil {
		r.t.Fatal(err)
	}
	if ti, err := r.rt.Task(r.t.Context(), bot); err != nil || ti.State != runtime.TaskNone {
		r.t.Fatalf("%s: the half-made task reads as %+v %v", bot, ti, err)
	}
	return shim
}

// noShim waits until no shim of the bot's container runs.
func (r *rig) noShim(bot string) {
	r.t.Helper()
	id := runtime.ContainerID(bot)
	testenv.Eventually(r.t, time.Minute, "no shim of "+id+" runs", func() bool {
		return len(testenv.ShimsOf(r.rt.Config().Namespace, id)) == 0
	})
}

// TestLeftoverTasks: a task containerd holds but memohfs cannot see (a
// kill -9 in the middle of its delete) is ended by reconcile for a bot
// recorded as stopped, one recorded as running and a container with no
// record; by stop on a stopped bot; and start runs over it. Before, each
// left the shim running and start failed with "already exists".
func TestLeftoverTasks(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	for _, b := range []string{"down", "up"} {
		if err := r.c.Create(ctx, b, 0); err != nil {
			t.Fatal(err)
		}
	}
	r.ctl("up", "start")
	r.c.Close() // the daemon dies in the middle of stopping up

	r.halfMade("down", true)
	task := r.task("up")
	exited, err := task.Wait(r.ns())
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Kill(r.ns(), syscall.SIGKILL, containerd.WithKillAll); err != nil {
		t.Fatal(err)
	}
	<-exited
	r.halfMade("up", false)
	if _, err := r.rt.Create(ctx, runtime.BotSpec{Bot: "stray", DataDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	r.halfMade("stray", true)

	r.restart()
	rep, err := r.c.Reconcile(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("reconcile: %s", rep)
	if len(rep.Errors) > 0 {
		t.Errorf("errors: %v", rep.Errors)
	}
	for _, id := range []string{"memohfs-down", "memohfs-stray"} {
		if !slices.ContainsFunc(rep.Released, func(s string) bool { return strings.Contains(s, "leftover task "+id+" ") }) {
			t.Errorf("the leftover task of %s is not in the report: %v", id, rep.Released)
		}
	}
	if !contains(rep.MarkedStopped, "up") {
		t.Errorf("up not marked stopped: %v", rep.MarkedStopped)
	}
	for _, b := range []string{"down", "up", "stray"} {
		r.noShim(b)
	}
	if _, err := r.rt.Container(ctx, "stray"); err != nil {
		t.Errorf("the orphan's container was touched: %v", err)
	}
	for _, b := range []string{"down", "up"} {
		r.ctl(b, "start")
		if st, err := r.c.Status(b); err != nil || st.State != store.StateRunning {
			t.Fatalf("%s after start: %+v %v", b, st, err)
		}
		r.ctl(b, "stop 1")
		r.noShim(b)
	}

	// A stopped bot: stop ends the leftover; start runs over one.
	r.halfMade("down", true)
	r.ctl("down", "stop 1")
	r.noShim("down")
	shim := r.halfMade("down", true)
	r.ctl("down", "start")
	testenv.Eventually(t, time.Minute, "the leftover's shim ends", func() bool {
		return !slices.Contains(testenv.ShimsOf(r.rt.Config().Namespace, "memohfs-down"), shim)
	})
	r.ctl("down", "stop 1")
	r.noShim("down")
	if err := r.rt.Delete(ctx, "stray"); err != nil {
		t.Fatal(err)
	}
}
