package runtime_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/memohfs/memohfs/internal/testenv"
	"github.com/memohfs/memohfs/runtime"
	"github.com/memohfs/memohfs/runtime/ociimage"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestLiveSnapshot snapshots a running bot: it keeps running on its own
// rootfs, and a second container made from the snapshot sees what was
// written before it and nothing written after.
func TestLiveSnapshot(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	_, data := f.bot("snappy", `echo before > /root/marker; echo ok > /data/ready; `+loop)
	ti := f.start("snappy")
	waitFile(t, filepath.Join(data, "ready"), 10*time.Second)
	before, _ := f.rt.Container(f.ctx, "snappy")

	var calls []bool
	snap, err := f.rt.Snapshot(f.ctx, "snappy", "s1", runtime.SnapshotOptions{
		Labels: map[string]string{"memohfs.source": "manual"},
		Sync: func(ctx context.Context, final bool) error {
			calls = append(calls, final)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(calls) < 2 || calls[0] || !calls[len(calls)-1] {
		t.Fatalf("Sync calls (final?) %v: want one or more while running, then one frozen", calls)
	}
	if snap.Name != "s1" || snap.Kind != "committed" || snap.Labels["containerd.io/gc.root"] == "" ||
		snap.Labels[runtime.LabelBot] != "snappy" || snap.Labels["memohfs.source"] != "manual" {
		t.Fatalf("snapshot info: %+v", snap)
	}

	// The bot runs on, on the same rootfs, and its rootfs still works.
	after, err := f.rt.Task(f.ctx, "snappy")
	if err != nil || after.State != runtime.TaskRunning || after.Pid != ti.Pid {
		t.Fatalf("task after snapshot: %+v %v", after, err)
	}
	if c, _ := f.rt.Container(f.ctx, "snappy"); c.RootfsKey != before.RootfsKey {
		t.Fatalf("rootfs moved: %s -> %s", before.RootfsKey, c.RootfsKey)
	}
	if out, code := f.exec("snappy", "sh", "-c", "cat /root/marker && echo later > /root/after && cat /root/after"); code != 0 || out != "before\nlater\n" {
		t.Fatalf("rootfs after snapshot: %d %q", code, out)
	}

	_, err = f.rt.Snapshot(f.ctx, "snappy", "s1", runtime.SnapshotOptions{})
	wantClass(t, err, "already exists")

	// Lineage: s1 and the rootfs share the image's top layer as parent.
	list, err := f.rt.Snapshots(f.ctx, "snappy")
	if err != nil {
		t.Fatal(err)
	}
	roles := map[string]runtime.SnapshotInfo{}
	for _, s := range list {
		roles[s.Role+":"+s.Name] = s
	}
	s1, rootfs, img := roles["snapshot:s1"], roles["rootfs:"], roles["image:"]
	if s1.Key == "" || rootfs.Key != before.RootfsKey || img.Key == "" {
		t.Fatalf("snapshots: %+v", list)
	}
	if s1.Parent != img.Key || rootfs.Parent != img.Key || len(s1.Lineage) == 0 || s1.Lineage[len(s1.Lineage)-1] != img.Key {
		t.Fatalf("lineage: s1=%+v rootfs=%+v image=%+v", s1, rootfs, img)
	}
	if list[0].Role != "image" {
		t.Fatalf("image layers come first: %+v", list)
	}

	// A second container booted from the snapshot.
	out := bootFromSnapshot(t, f, snap.Key, "cat /root/marker; test -e /root/after && echo leaked")
	if out != "before\n" {
		t.Fatalf("second container from s1 saw %q", out)
	}
	if _, err := f.rt.Stop(f.ctx, "snappy", 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestSnapshotInstant: the rootfs and what Sync copies are captured at one
// instant. The bot bumps a counter in its rootfs, then in /data, as fast
// as it can; in the snapshot the rootfs counter equals the data counter
// or is one ahead, and while the final Sync runs the bot makes no
// progress at all (it is frozen).
func TestSnapshotInstant(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	_, data := f.bot("instant", `i=0; while :; do i=$((i+1)); echo $i > /root/a.t; mv /root/a.t /root/a; echo $i > /data/b.t; mv /data/b.t /data/b; done`)
	f.start("instant")
	waitFile(t, filepath.Join(data, "b"), 10*time.Second)
	for round := 0; round < 3; round++ {
		var atFreeze, afterWait string
		snap, err := f.rt.Snapshot(f.ctx, "instant", fmt.Sprintf("i%d", round), runtime.SnapshotOptions{
			Sync: func(ctx context.Context, final bool) error {
				if !final {
					return nil
				}
				b, err := os.ReadFile(filepath.Join(data, "b"))
				atFreeze = string(b)
				time.Sleep(30 * time.Millisecond)
				b2, _ := os.ReadFile(filepath.Join(data, "b"))
				afterWait = string(b2)
				return err
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		if atFreeze == "" || atFreeze != afterWait {
			t.Fatalf("round %d: the bot ran on while frozen: %q then %q", round, atFreeze, afterWait)
		}
		if snap.Paused <= 0 || snap.Paused > 5*time.Second {
			t.Fatalf("round %d: paused %v", round, snap.Paused)
		}
		out := bootFromSnapshot(t, f, snap.Key, "cat /root/a")
		a, errA := strconv.Atoi(strings.TrimSpace(out))
		b, errB := strconv.Atoi(strings.TrimSpace(atFreeze))
		if errA != nil || errB != nil || (a != b && a != b+1) {
			t.Fatalf("round %d: rootfs counter %q, data counter %q: not one instant", round, out, atFreeze)
		}
		t.Logf("round %d: rootfs %d data %d, paused %v", round, a, b, snap.Paused)
	}
	if _, err := f.rt.Stop(f.ctx, "instant", 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestSnapshotDeletions: files and dirs of the image deleted in the bot
// (overlay whiteouts and opaque dirs) stay deleted in the snapshot.
func TestSnapshotDeletions(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	_, data := f.bot("deleter", `rm /etc/group && rm -rf /usr/bin && mkdir /usr/bin && echo new > /usr/bin/new && echo ok > /data/ready; `+loop)
	f.start("deleter")
	waitFile(t, filepath.Join(data, "ready"), 10*time.Second)
	snap, err := f.rt.Snapshot(f.ctx, "deleter", "gone", runtime.SnapshotOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := bootFromSnapshot(t, f, snap.Key, "test -e /etc/group && echo group; cat /etc/passwd | head -1; ls /usr/bin")
	if out != "root:x:0:0:root:/root:/bin/sh\nnew\n" {
		t.Fatalf("snapshot of a rootfs with deletions shows %q", out)
	}
	if _, err := f.rt.Stop(f.ctx, "deleter", 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

// bootFromSnapshot runs script in a plain container (not a bot) on a fresh
// rootfs prepared from a committed snapshot and returns what it wrote.
func bootFromSnapshot(t *testing.T, f *fixture, key, script string) string {
	t.Helper()
	ctx := namespaces.WithNamespace(f.ctx, f.cfg.Namespace)
	client := f.rt.Client()
	img, err := client.GetImage(ctx, ociimage.DefaultName)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(f.env.TempDir(t), "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	// A lease keeps the probe's rootfs from the garbage collector until
	// the container holds it.
	ctx, done, err := client.WithLease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer done(ctx)
	sn := client.SnapshotService("overlayfs")
	if _, err := sn.Prepare(ctx, "probe-from-"+key, key, snapshots.WithLabels(map[string]string{"test": "1"})); err != nil {
		t.Fatal(err)
	}
	ctr, err := client.NewContainer(ctx, "probe-from-snapshot",
		containerd.WithSnapshotter("overlayfs"), containerd.WithSnapshot("probe-from-"+key),
		containerd.WithRuntime("io.containerd.runc.v2", nil),
		containerd.WithNewSpec(oci.WithImageConfig(img),
			oci.WithProcessArgs("/bin/sh", "-c", "("+script+") > /out/result 2>&1"),
			oci.WithMounts([]specs.Mount{{Type: "bind", Source: out, Destination: "/out", Options: []string{"rbind", "rw"}}})))
	if err != nil {
		t.Fatal(err)
	}
	defer ctr.Delete(ctx, containerd.WithSnapshotCleanup)
	task, err := ctr.NewTask(ctx, cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	defer task.Delete(ctx, containerd.WithProcessKill)
	exited, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatal("container from snapshot did not finish")
	}
	b, err := os.ReadFile(filepath.Join(out, "result"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRestore puts a bot's rootfs back to a snapshot.
func TestRestore(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	_, data := f.bot("phoenix", `test -e /root/marker || echo v1 > /root/marker; echo ok > /data/ready; `+loop)
	f.start("phoenix")
	waitFile(t, filepath.Join(data, "ready"), 10*time.Second)
	if _, err := f.rt.Snapshot(f.ctx, "phoenix", "good", runtime.SnapshotOptions{}); err != nil {
		t.Fatal(err)
	}
	if out, code := f.exec("phoenix", "sh", "-c", "echo v2 > /root/marker; rm /bin/vi"); code != 0 {
		t.Fatalf("damage rootfs: %s", out)
	}

	_, err := f.rt.Restore(f.ctx, "phoenix", "good")
	wantClass(t, err, "failed precondition") // running
	_, err = f.rt.Restore(f.ctx, "phoenix", "nope")
	wantClass(t, err, "not found")

	if _, err := f.rt.Stop(f.ctx, "phoenix", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	old, _ := f.rt.Container(f.ctx, "phoenix")
	restored, err := f.rt.Restore(f.ctx, "phoenix", "good")
	if err != nil {
		t.Fatal(err)
	}
	if restored.RootfsKey == old.RootfsKey || restored.RootfsKey == "" {
		t.Fatalf("rootfs key after restore: %s (was %s)", restored.RootfsKey, old.RootfsKey)
	}
	ctx := namespaces.WithNamespace(f.ctx, f.cfg.Namespace)
	sn := f.rt.Client().SnapshotService("overlayfs")
	if _, err := sn.Stat(ctx, old.RootfsKey); err == nil {
		t.Fatalf("old rootfs %s still there", old.RootfsKey)
	}
	os.Remove(filepath.Join(data, "ready"))
	f.start("phoenix")
	waitFile(t, filepath.Join(data, "ready"), 10*time.Second)
	if out, code := f.exec("phoenix", "sh", "-c", "cat /root/marker; test -e /bin/vi && echo vi"); code != 0 || out != "v1\nvi\n" {
		t.Fatalf("after restore: %d %q", code, out)
	}

	list, err := f.rt.Snapshots(f.ctx, "phoenix")
	if err != nil {
		t.Fatal(err)
	}
	var good runtime.SnapshotInfo
	for _, s := range list {
		if s.Name == "good" {
			good = s
		}
	}
	for _, s := range list {
		if s.Role == "rootfs" && (s.Parent != good.Key || s.Lineage[0] != good.Key) {
			t.Fatalf("restored rootfs should build on %s: %+v", good.Key, s)
		}
	}

	// A snapshot the rootfs is built on cannot be dropped; others can.
	wantClass(t, f.rt.RemoveSnapshot(f.ctx, "phoenix", "good"), "failed precondition")
	wantClass(t, f.rt.RemoveSnapshot(f.ctx, "phoenix", "nope"), "not found")
	if _, err := f.rt.Snapshot(f.ctx, "phoenix", "spare", runtime.SnapshotOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := f.rt.RemoveSnapshot(f.ctx, "phoenix", "spare"); err != nil {
		t.Fatal(err)
	}

	// Delete takes the container, the rootfs and every snapshot.
	wantClass(t, f.rt.Delete(f.ctx, "phoenix"), "failed precondition") // running
	if _, err := f.rt.Stop(f.ctx, "phoenix", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := f.rt.Delete(f.ctx, "phoenix"); err != nil {
		t.Fatal(err)
	}
	var left []string
	sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if strings.HasPrefix(info.Name, "memohfs/phoenix/") || info.Labels[runtime.LabelBot] == "phoenix" {
			left = append(left, info.Name)
		}
		return nil
	})
	if len(left) > 0 {
		t.Fatalf("snapshots left after delete: %v", left)
	}
}

// TestSnapshotView mounts a read-only view of a snapshot; dropping the
// snapshot or deleting the bot takes the view down first.
func TestSnapshotView(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.bot("viewed", "")
	f.start("viewed")
	if out, code := f.exec("viewed", "sh", "-c", "echo seen > /root/marker"); code != 0 {
		t.Fatal(out)
	}
	for _, n := range []string{"a", "b"} {
		if _, err := f.rt.Snapshot(f.ctx, "viewed", n, runtime.SnapshotOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	dir, err := f.rt.MountSnapshot(f.ctx, "viewed", "a")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "root", "marker")); err != nil || string(b) != "seen\n" {
		t.Fatalf("view: %q %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "root", "x"), []byte("x"), 0o644); err == nil {
		t.Fatal("the view is writable")
	}
	again, err := f.rt.MountSnapshot(f.ctx, "viewed", "a")
	if err != nil || again != dir {
		t.Fatalf("second mount: %s %v", again, err)
	}
	_, err = f.rt.MountSnapshot(f.ctx, "viewed", "nope")
	wantClass(t, err, "not found")
	// Dropping a viewed snapshot unmounts the view first.
	if err := f.rt.RemoveSnapshot(f.ctx, "viewed", "a"); err != nil {
		t.Fatal(err)
	}
	if len(testenv.MountsUnder(dir)) != 0 {
		t.Fatalf("view of a dropped snapshot still mounted")
	}
	dirB, err := f.rt.MountSnapshot(f.ctx, "viewed", "b")
	if err != nil {
		t.Fatal(err)
	}

	// Views asked for at once (a FUSE view and its bind do): one view is
	// made, and every caller gets it; a drop while views are asked for
	// leaves no view behind and is not refused for one made meanwhile.
	for i := range 4 {
		snap := fmt.Sprintf("c%d", i)
		if _, err := f.rt.Snapshot(f.ctx, "viewed", snap, runtime.SnapshotOptions{}); err != nil {
			t.Fatal(err)
		}
		dirs := make([]string, 4)
		errs := make([]error, 4)
		var wg sync.WaitGroup
		for j := range dirs {
			wg.Add(1)
			go func() { defer wg.Done(); dirs[j], errs[j] = f.rt.MountSnapshot(f.ctx, "viewed", snap) }()
		}
		wg.Wait()
		for j := range dirs {
			if errs[j] != nil || dirs[j] != dirs[0] {
				t.Fatalf("view %s asked for 4 times at once: %q %v", snap, dirs, errs)
			}
		}
		if n := len(testenv.MountsUnder(dirs[0])); n != 1 {
			t.Fatalf("view %s: %d mounts, want 1", snap, n)
		}
		var rmErr error
		wg.Add(2)
		go func() { defer wg.Done(); rmErr = f.rt.RemoveSnapshot(f.ctx, "viewed", snap) }()
		go func() { defer wg.Done(); f.rt.MountSnapshot(f.ctx, "viewed", snap) }()
		wg.Wait()
		if rmErr != nil {
			t.Fatalf("drop %s while its view was asked for: %v", snap, rmErr)
		}
		if len(testenv.MountsUnder(dirs[0])) != 0 {
			t.Fatalf("view of dropped snapshot %s still mounted", snap)
		}
	}

	if _, err := f.rt.Stop(f.ctx, "viewed", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := f.rt.Delete(f.ctx, "viewed"); err != nil {
		t.Fatal(err)
	}
	if len(testenv.MountsUnder(dirB)) != 0 {
		t.Fatalf("view of a deleted bot still mounted")
	}
}

// TestReattachRootfs: a container lost while its rootfs survived is made
// again on that rootfs, not on a fresh one (reconcile must not wipe it).
func TestReattachRootfs(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	info, data := f.bot("lazarus", "")
	f.start("lazarus")
	if out, code := f.exec("lazarus", "sh", "-c", "echo kept > /root/marker"); code != 0 {
		t.Fatal(out)
	}
	if _, err := f.rt.Stop(f.ctx, "lazarus", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	ctx := namespacesCtx(f)
	ctr, err := f.rt.Client().LoadContainer(ctx, info.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := ctr.Delete(ctx); err != nil { // no snapshot cleanup: the rootfs survives
		t.Fatal(err)
	}
	again, err := f.rt.Create(f.ctx, runtime.BotSpec{Bot: "lazarus", DataDir: data, RootfsKey: info.RootfsKey})
	if err != nil {
		t.Fatal(err)
	}
	if again.RootfsKey != info.RootfsKey {
		t.Fatalf("rootfs %s, want the surviving %s", again.RootfsKey, info.RootfsKey)
	}
	f.start("lazarus")
	if out, _ := f.exec("lazarus", "cat", "/root/marker"); out != "kept\n" {
		t.Fatalf("marker after re-create: %q", out)
	}
	// A key that is gone falls back to a fresh rootfs from the image.
	if _, err := f.rt.Stop(f.ctx, "lazarus", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := f.rt.Delete(f.ctx, "lazarus"); err != nil {
		t.Fatal(err)
	}
	fresh, err := f.rt.Create(f.ctx, runtime.BotSpec{Bot: "lazarus", DataDir: data, RootfsKey: info.RootfsKey})
	if err != nil || fresh.RootfsKey == info.RootfsKey {
		t.Fatalf("fresh: %+v %v", fresh, err)
	}
}
