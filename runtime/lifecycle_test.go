package runtime_test

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/memohfs/memohfs/internal/testenv"
	"github.com/memohfs/memohfs/runtime"
	"github.com/memohfs/memohfs/runtime/ociimage"
)

func TestEnsureImage(t *testing.T) {
	t.Parallel()
	env := testenv.Get(t)
	rt, cfg := env.Runtime(t)
	f := &fixture{t: t, env: env, rt: rt, cfg: cfg, ctx: t.Context()}
	info, err := rt.EnsureImage(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !info.Imported || info.Name != ociimage.DefaultName || !strings.HasPrefix(info.Digest, "sha256:") {
		t.Fatalf("first EnsureImage: %+v", info)
	}
	again, err := rt.EnsureImage(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if again.Imported || again.Digest != info.Digest {
		t.Fatalf("second EnsureImage imported again or changed: %+v", again)
	}
	ctx := namespaces.WithNamespace(f.ctx, cfg.Namespace)
	img, err := rt.Client().GetImage(ctx, ociimage.DefaultName)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := img.IsUnpacked(ctx, "overlayfs"); err != nil || !ok {
		t.Fatalf("image not unpacked into overlayfs: %v %v", ok, err)
	}
}

// TestLifecycle creates, starts, inspects, stops and deletes a real bot
// with a real CNI address, and checks what each step leaves behind.
func TestLifecycle(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	script := `echo "hello from $(hostname)"; echo hi > /data/hello; ` + loop
	info, data := f.bot("alpha", script)
	if info.ID != "memohfs-alpha" || info.Labels[runtime.LabelBot] != "alpha" || info.DataDir != data {
		t.Fatalf("container info: %+v", info)
	}
	if info.RootfsKey == "" || info.Snapshotter != "overlayfs" {
		t.Fatalf("rootfs: %+v", info)
	}

	// A second create must fail and leave the first container's rootfs be
	// (the seed removed the live rootfs snapshot here).
	_, err := f.rt.Create(f.ctx, runtime.BotSpec{Bot: "alpha", DataDir: data})
	wantClass(t, err, "already exists")
	again, err := f.rt.Container(f.ctx, "alpha")
	if err != nil || again.RootfsKey != info.RootfsKey {
		t.Fatalf("container changed by a refused create: %+v %v", again, err)
	}

	ti, err := f.rt.Task(f.ctx, "alpha")
	if err != nil || ti.State != runtime.TaskNone {
		t.Fatalf("task before start: %+v %v", ti, err)
	}
	ti = f.start("alpha")
	if ti.State != runtime.TaskRunning || ti.Pid == 0 {
		t.Fatalf("start: %+v", ti)
	}
	ip, err := netip.ParseAddr(ti.IP)
	if err != nil || !netip.MustParsePrefix(f.cfg.Network.Subnet).Contains(ip) {
		t.Fatalf("ip %q not in %s", ti.IP, f.cfg.Network.Subnet)
	}
	if got := waitFile(t, filepath.Join(data, "hello"), 10*time.Second); got != "hi\n" {
		t.Fatalf("/data/hello = %q", got)
	}
	if got := waitFile(t, f.cfg.LogPath("alpha"), 10*time.Second); !strings.Contains(got, "hello from alpha") {
		t.Fatalf("log = %q", got)
	}

	// Starting a running bot is a no-op.
	ti2 := f.start("alpha")
	if ti2.Pid != ti.Pid || ti2.IP != ti.IP {
		t.Fatalf("second start changed the task: %+v vs %+v", ti2, ti)
	}
	cur, err := f.rt.Task(f.ctx, "alpha")
	if err != nil || cur.State != runtime.TaskRunning || cur.Pid != ti.Pid || cur.IP != ti.IP {
		t.Fatalf("task: %+v %v", cur, err)
	}

	// Inside: its address on eth0, the gateway on the private bridge
	// answers, cgroupfs paths, read-only resolv.conf.
	out, code := f.exec("alpha", "ip", "-4", "addr", "show", "eth0")
	if code != 0 || !strings.Contains(out, ti.IP+"/") {
		t.Fatalf("ip addr: %d %s", code, out)
	}
	gw := netip.MustParsePrefix(f.cfg.Network.Subnet).Addr().Next().String()
	if out, code := f.exec("alpha", "ping", "-c", "1", "-W", "2", gw); code != 0 {
		t.Fatalf("ping gateway %s: %d %s", gw, code, out)
	}
	out, _ = f.exec("alpha", "cat", "/proc/self/cgroup")
	if !strings.Contains(out, "/"+f.cfg.Namespace+"/memohfs-alpha") {
		t.Fatalf("cgroup paths: %s", out)
	}
	if _, err := os.Stat("/etc/resolv.conf"); err == nil {
		if out, code := f.exec("alpha", "sh", "-c", "echo x >> /etc/resolv.conf"); code == 0 {
			t.Fatalf("resolv.conf is writable in the bot: %s", out)
		}
	}
	if len(leases(f.cfg)) != 1 || len(netnsFiles(f.cfg)) != 1 {
		t.Fatalf("while running: leases %v netns %v", leases(f.cfg), netnsFiles(f.cfg))
	}

	start := time.Now()
	st, err := f.rt.Stop(f.ctx, "alpha", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != runtime.TaskNone || !st.HasExited || st.ExitCode != 0 {
		t.Fatalf("stop: %+v", st)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Fatalf("a bot that exits on SIGTERM took %s to stop", d)
	}
	if l, n := leases(f.cfg), netnsFiles(f.cfg); len(l) != 0 || len(n) != 0 {
		t.Fatalf("after stop: leases %v netns %v", l, n)
	}
	c, err := f.rt.Container(f.ctx, "alpha")
	if err != nil || c.NetNS != "" || c.IP != "" {
		t.Fatalf("network labels after stop: %+v %v", c, err)
	}
	if st, err := f.rt.Stop(f.ctx, "alpha", time.Second); err != nil || st.State != runtime.TaskNone {
		t.Fatalf("stopping a stopped bot: %+v %v", st, err)
	}

	if err := f.rt.Delete(f.ctx, "alpha"); err != nil {
		t.Fatal(err)
	}
	_, err = f.rt.Container(f.ctx, "alpha")
	wantClass(t, err, "not found")
	snaps, err := f.rt.Snapshots(f.ctx, "alpha")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range snaps {
		if s.Role != "image" {
			t.Fatalf("snapshot left after delete: %+v", s)
		}
	}
	wantClass(t, f.rt.Delete(f.ctx, "alpha"), "not found")
	if _, err := os.Stat(filepath.Join(data, "hello")); err != nil {
		t.Fatalf("delete must not touch the host data dir: %v", err)
	}
}

// TestStopKill: a bot that ignores SIGTERM is killed after the grace,
// with every process of the container.
func TestStopKill(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	_, data := f.bot("stubborn", `trap '' TERM; (trap '' TERM; sleep 1000) & echo ok > /data/ready; while :; do sleep 1; done`)
	f.start("stubborn")
	waitFile(t, filepath.Join(data, "ready"), 10*time.Second)
	grace := 700 * time.Millisecond
	start := time.Now()
	st, err := f.rt.Stop(f.ctx, "stubborn", grace)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < grace {
		t.Fatalf("stopped after %s, before the %s grace", d, grace)
	}
	if !st.HasExited || st.ExitCode != 137 {
		t.Fatalf("want exit 137 (SIGKILL), got %+v", st)
	}
	if l := leases(f.cfg); len(l) != 0 {
		t.Fatalf("leases after kill: %v", l)
	}
}

// TestTaskIsPerContainer: each bot's task state is its own (the seed read
// the first task of an unfiltered list, often another bot's).
func TestTaskIsPerContainer(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.bot("one", loop)
	f.bot("two", loop)
	one := f.start("one")
	two, err := f.rt.Task(f.ctx, "two")
	if err != nil || two.State != runtime.TaskNone || two.Pid != 0 {
		t.Fatalf("bot two reads as %+v (%v) while only bot one runs", two, err)
	}
	two = f.start("two")
	if two.Pid == one.Pid || two.IP == one.IP {
		t.Fatalf("two bots share pid or ip: %+v %+v", one, two)
	}
	if _, err := f.rt.Stop(f.ctx, "one", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	got1, _ := f.rt.Task(f.ctx, "one")
	got2, _ := f.rt.Task(f.ctx, "two")
	if got1.State != runtime.TaskNone || got2.State != runtime.TaskRunning || got2.Pid != two.Pid {
		t.Fatalf("after stopping one: one=%+v two=%+v", got1, got2)
	}
	list, err := f.rt.Containers(f.ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("containers: %+v %v", list, err)
	}
	if _, err := f.rt.Stop(f.ctx, "two", 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestExitEvent: a task that dies on its own is reported by an event and
// by Task, and can be started again.
func TestExitEvent(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.bot("brief", `test -e /data/again && exec sh -c "`+loop+`"; echo x > /data/again; sleep 0.3; exit 7`)
	ctx, cancel := context.WithCancel(f.ctx)
	events, errc := f.rt.Events(ctx)
	ti := f.start("brief")
	var sawStart bool
	timeout := time.After(20 * time.Second)
	for done := false; !done; {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("event stream ended: %v", <-errc)
			}
			if ev.Bot != "brief" {
				t.Fatalf("event of another bot: %+v", ev)
			}
			switch ev.Type {
			case runtime.EventStart:
				sawStart = ev.Pid == ti.Pid
			case runtime.EventExit:
				if ev.ExitCode != 7 || ev.Pid != ti.Pid {
					t.Fatalf("exit event: %+v", ev)
				}
				done = true
			}
		case <-timeout:
			t.Fatal("no exit event within 20s")
		}
	}
	if !sawStart {
		t.Fatal("no start event with the task's pid before its exit")
	}
	got, err := f.rt.Task(f.ctx, "brief")
	if err != nil || got.State != runtime.TaskStopped || !got.HasExited || got.ExitCode != 7 {
		t.Fatalf("task after exit: %+v %v", got, err)
	}
	// Start again clears the dead task; the network is set up afresh.
	again := f.start("brief")
	if again.Pid == ti.Pid || again.State != runtime.TaskRunning {
		t.Fatalf("restart after exit: %+v", again)
	}
	if l := leases(f.cfg); len(l) != 1 {
		t.Fatalf("leases after restart: %v", l)
	}
	cancel()
	for range events {
	}
	if err := <-errc; err != nil {
		t.Fatalf("event stream after cancel: %v", err)
	}
	if _, err := f.rt.Stop(f.ctx, "brief", 5*time.Second); err != nil {
		t.Fatal(err)
	}
}
