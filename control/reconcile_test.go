package control_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/memohfs/memohfs/control"
	"github.com/memohfs/memohfs/internal/testenv"
	"github.com/memohfs/memohfs/runtime"
	"github.com/memohfs/memohfs/store"
)

type rig struct {
	t    *testing.T
	rt   *runtime.Containerd
	st   *store.Store
	db   string // the store's database URL
	opts control.Options
	c    *control.Controller
}

func newRig(t *testing.T) *rig {
	t.Helper()
	env := testenv.Get(t)
	rt, _ := env.Runtime(t)
	if _, err := rt.EnsureImage(t.Context()); err != nil {
		t.Fatal(err)
	}
	db := env.Database(t)
	st, err := store.Open(t.Context(), db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	r := &rig{t: t, rt: rt, st: st, db: db, opts: control.Options{DataRoot: filepath.Join(env.TempDir(t), "root"), StopGrace: 3 * time.Second}}
	r.restart()
	t.Cleanup(func() { r.c.Close() })
	return r
}

// restart makes a new controller over the same runtime and store, as a
// daemon restart does.
func (r *rig) restart() {
	r.t.Helper()
	if r.c != nil {
		r.c.Close()
	}
	c, err := control.New(r.t.Context(), r.rt, r.st, r.opts)
	if err != nil {
		r.t.Fatal(err)
	}
	r.c = c
}

func (r *rig) ctl(bot, text string) {
	r.t.Helper()
	if err := r.c.Ctl(r.t.Context(), bot, text); err != nil {
		r.t.Fatalf("ctl %s %q: %v", bot, text, err)
	}
}

func (r *rig) ns() context.Context {
	return namespaces.WithNamespace(r.t.Context(), r.rt.Config().Namespace)
}

func (r *rig) task(bot string) containerd.Task {
	r.t.Helper()
	ctr, err := r.rt.Client().LoadContainer(r.ns(), runtime.ContainerID(bot))
	if err != nil {
		r.t.Fatal(err)
	}
	task, err := ctr.Task(r.ns(), nil)
	if err != nil {
		r.t.Fatal(err)
	}
	return task
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if strings.HasPrefix(x, s) {
			return true
		}
	}
	return false
}

// TestReconcileDrift injects each kind of drift, restarts the controller
// and checks reconcile repairs or reports it, and loses no snapshot.
func TestReconcileDrift(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	for _, b := range []string{"gone", "killed", "auto", "steady"} {
		if err := r.c.Create(ctx, b, 0); err != nil {
			t.Fatal(err)
		}
		r.ctl(b, "start")
		r.ctl(b, "snapshot keep")
	}
	r.ctl("auto", "autostart on")
	r.ctl("gone", "stop")
	// A file in gone's rootfs that must survive its container's loss.
	r.ctl("gone", "start")
	var out strings.Builder
	if code, err := r.rt.Exec(ctx, "gone", []string{"sh", "-c", "echo kept > /root/marker"}, &out, &out); err != nil || code != 0 {
		t.Fatal(err, out.String())
	}
	r.c.Close() // the daemon goes down; drift happens meanwhile

	// 1. gone: its container is deleted behind our back (rootfs kept).
	task := r.task("gone")
	if _, err := task.Delete(r.ns(), containerd.WithProcessKill); err != nil {
		t.Fatal(err)
	}
	ctr, _ := r.rt.Client().LoadContainer(r.ns(), runtime.ContainerID("gone"))
	if err := ctr.Delete(r.ns()); err != nil {
		t.Fatal(err)
	}
	// 2. killed / auto: their tasks die while nobody watches (the records
	// still say running).
	for _, b := range []string{"killed", "auto"} {
		pid := r.task(b).Pid()
		if err := syscall.Kill(int(pid), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	// 3. an unrecorded container carrying the label.
	if _, err := r.rt.Create(ctx, runtime.BotSpec{Bot: "stray", DataDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	// 4. a leaked lease (a dead task's, whose stop never ran): killed's.
	time.Sleep(200 * time.Millisecond) // let the killed tasks be reaped by their shims
	leasesBefore := leasesOf(r)

	r.restart()
	rep, err := r.c.Reconcile(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("reconcile: %s", rep)
	if !contains(rep.Recreated, "gone (rootfs kept: true)") {
		t.Errorf("gone not recreated on its rootfs: %+v", rep.Recreated)
	}
	if !contains(rep.MarkedStopped, "killed") || !contains(rep.Restarted, "auto") {
		t.Errorf("killed/auto: %+v / %+v", rep.MarkedStopped, rep.Restarted)
	}
	if !contains(rep.Orphans, "memohfs-stray") {
		t.Errorf("stray container not reported: %+v", rep.Orphans)
	}
	if _, err := r.rt.Container(ctx, "stray"); err != nil {
		t.Errorf("the orphan was touched: %v", err)
	}
	if len(rep.Errors) > 0 {
		t.Errorf("errors: %v", rep.Errors)
	}
	// States now.
	want := map[string]store.State{"gone": store.StateStopped, "killed": store.StateStopped,
		"auto": store.StateRunning, "steady": store.StateRunning}
	for b, w := range want {
		st, err := r.c.Status(b)
		if err != nil || st.State != w {
			t.Errorf("%s: %+v %v, want %s", b, st, err, w)
		}
		if st.Snapshots != 1 {
			t.Errorf("%s lost its snapshot: %+v", b, st)
		}
		rec, _ := r.st.GetBot(ctx, b)
		if rec.Container.State != w {
			t.Errorf("%s recorded as %s, want %s", b, rec.Container.State, w)
		}
	}
	if st, _ := r.c.Status("killed"); st.Exit == nil || *st.Exit != 137 {
		t.Errorf("killed's exit code: %+v", st.Exit)
	}
	// gone keeps its rootfs.
	r.ctl("gone", "start")
	out.Reset()
	if _, err := r.rt.Exec(ctx, "gone", []string{"cat", "/root/marker"}, &out, &out); err != nil || out.String() != "kept\n" {
		t.Errorf("gone's rootfs after reconcile: %q %v", out.String(), err)
	}
	// No lease is left for a bot that does not run.
	leasesAfter := leasesOf(r)
	if leasesAfter["killed"] {
		t.Errorf("killed still holds a lease (before: %v, after: %v)", leasesBefore, leasesAfter)
	}
	if !leasesAfter["auto"] || !leasesAfter["steady"] || !leasesAfter["gone"] {
		t.Errorf("running bots should hold leases: %v", leasesAfter)
	}
	for _, b := range []string{"gone", "auto", "steady"} {
		r.ctl(b, "stop 1")
	}
	if err := r.rt.Delete(ctx, "stray"); err != nil {
		t.Fatal(err)
	}
}

func leasesOf(r *rig) map[string]bool {
	all, _ := runtime.IPAMLeases(r.rt.Config().Network)
	out := map[string]bool{}
	for _, id := range all {
		if cid, ok := strings.CutPrefix(id, r.rt.Config().Namespace+"."); ok {
			out[runtime.BotOf(cid)] = true
		}
	}
	return out
}

// TestReconcileSnapshots: a snapshot a crash left without its record is
// recorded; a record whose snapshot is gone is dropped, its data kept.
func TestReconcileSnapshots(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	if err := r.c.Create(ctx, "snappy", 0); err != nil {
		t.Fatal(err)
	}
	r.ctl("snappy", "snapshot recorded")
	r.ctl("snappy", "snapshot lost")
	r.c.Close()
	// A snapshot taken but never recorded (the crash came between).
	if _, err := r.rt.Snapshot(ctx, "snappy", "unrecorded", runtime.SnapshotOptions{
		Labels: map[string]string{"memohfs.source": "manual"}}); err != nil {
		t.Fatal(err)
	}
	// A runtime snapshot that went away under its record.
	if err := r.rt.RemoveSnapshot(ctx, "snappy", "lost"); err != nil {
		t.Fatal(err)
	}
	r.restart()
	rep, err := r.c.Reconcile(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !contains(rep.Adopted, "snappy/unrecorded") || !contains(rep.Dropped, "snappy/lost") {
		t.Fatalf("report: %s", rep)
	}
	snaps, err := r.c.Snapshots(ctx, "snappy")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range snaps {
		names = append(names, s.Name)
	}
	if strings.Join(names, " ") != "recorded unrecorded" {
		t.Fatalf("snapshots after reconcile: %v", names)
	}
	kept, _ := filepath.Glob(filepath.Join(r.opts.DataRoot, "trash", "snappy-snapshot-lost-*"))
	if len(kept) != 1 {
		t.Fatalf("the lost snapshot's data was not kept: %v", kept)
	}
	if st, _ := r.c.Status("snappy"); st.Snapshots != 2 {
		t.Fatalf("status: %+v", st)
	}
	// A second reconcile finds nothing to do.
	rep, _ = r.c.Reconcile(context.Background())
	if rep.String() != "nothing to do" {
		t.Fatalf("second reconcile: %s", rep)
	}
}

// TestReconcileFinishesDelete: a delete a crash interrupted is finished.
func TestReconcileFinishesDelete(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	if err := r.c.Create(ctx, "doomed", 0); err != nil {
		t.Fatal(err)
	}
	st, _ := r.c.Status("doomed")
	// The intent was recorded, then the daemon died.
	if _, err := r.st.AddEvent(ctx, st.ID, store.Event{Type: "delete"}); err != nil {
		t.Fatal(err)
	}
	r.restart()
	rep, err := r.c.Reconcile(context.Background())
	if err != nil || !contains(rep.Finished, "doomed") {
		t.Fatalf("report: %s %v", rep, err)
	}
	if _, err := r.rt.Container(ctx, "doomed"); err == nil {
		t.Fatal("container left")
	}
	if _, err := r.st.GetBot(ctx, "doomed"); !store.IsNotFound(err) {
		t.Fatalf("record left: %v", err)
	}
	if _, err := os.Stat(filepath.Join(r.opts.DataRoot, "bots", "doomed")); !os.IsNotExist(err) {
		t.Fatalf("data dir not moved aside: %v", err)
	}
}
