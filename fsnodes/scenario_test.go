package fsnodes_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/memohfs/memohfs/fsnodes"
	"github.com/memohfs/memohfs/runtime"
)

// TestShellScenario is the user's walk through a bot's life, with plain
// file operations on the mount.
func TestShellScenario(t *testing.T) {
	s := newStack(t, fsnodes.Options{})
	ctx := t.Context()

	if err := os.Mkdir(s.Path("b1"), 0o755); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(s.Mnt)
	if len(entries) != 1 || entries[0].Name() != "b1" {
		t.Fatalf("ls /M: %v", entries)
	}
	want := []string{"cmd", "ctl", "data", "err", "events", "log", "skills", "snapshots", "status"}
	var got []string
	list, _ := os.ReadDir(s.Path("b1"))
	for _, e := range list {
		got = append(got, e.Name())
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("ls /M/b1: %v", got)
	}
	if st := s.StatusFields("b1"); st["state"] != "created" || st["pid"] != "-" {
		t.Fatalf("status after mkdir: %v", st)
	}
	if !strings.Contains(s.Read("b1", "ctl"), "snapshot [NAME]") {
		t.Fatalf("ctl help: %s", s.Read("b1", "ctl"))
	}

	s.MustSh(`echo start > $M/b1/ctl`)
	st := s.StatusFields("b1")
	if st["state"] != "running" || st["pid"] == "-" || st["ip"] == "-" || st["container"] != "memohfs-b1" {
		t.Fatalf("status after start: %v", st)
	}
	pid := st["pid"]

	// Host -> container.
	s.MustSh(`echo hello > $M/b1/data/x`)
	if out, code := s.Exec("b1", "cat", "/data/x"); code != 0 || out != "hello\n" {
		t.Fatalf("container sees /data/x: %d %q", code, out)
	}
	// Container -> host, at once.
	if out, code := s.Exec("b1", "sh", "-c", "echo from-bot > /data/y"); code != 0 {
		t.Fatalf("write /data/y: %d %s", code, out)
	}
	if got := s.Read("b1", "data", "y"); got != "from-bot\n" {
		t.Fatalf("data/y = %q", got)
	}
	// A file the kernel has cached, changed by the bot: seen at once.
	if out, code := s.Exec("b1", "sh", "-c", "echo more >> /data/y"); code != 0 {
		t.Fatalf("append /data/y: %d %s", code, out)
	}
	if got := s.Read("b1", "data", "y"); got != "from-bot\nmore\n" {
		t.Fatalf("data/y after the bot appended = %q", got)
	}
	// The rootfs is part of the snapshot too.
	if out, code := s.Exec("b1", "sh", "-c", "echo before > /root/marker"); code != 0 {
		t.Fatalf("marker: %s", out)
	}
	var sfs, hfs syscall.Statfs_t
	must(t, syscall.Statfs(s.Path("b1", "data"), &sfs))
	must(t, syscall.Statfs(s.Root, &hfs))
	if sfs.Blocks != hfs.Blocks || sfs.Bsize != hfs.Bsize {
		t.Fatalf("statfs of data/ %+v differs from the disk's %+v", sfs, hfs)
	}

	s.MustSh(`echo 'snapshot s1' > $M/b1/ctl`)
	if st := s.StatusFields("b1"); st["state"] != "running" || st["pid"] != pid || st["snapshots"] != "1" || st["version"] != "1" {
		t.Fatalf("status after snapshot: %v (pid was %s)", st, pid)
	}
	if ls := s.MustSh(`ls $M/b1/snapshots/`); ls != "s1\n" {
		t.Fatalf("ls snapshots: %q", ls)
	}
	if got := s.Read("b1", "snapshots", "s1", "data", "x"); got != "hello\n" {
		t.Fatalf("snapshots/s1/data/x = %q", got)
	}
	info := s.Read("b1", "snapshots", "s1", "info")
	if !strings.Contains(info, "name s1\n") || !strings.Contains(info, "version 1\n") || !strings.Contains(info, "source manual\n") {
		t.Fatalf("info: %s", info)
	}
	if _, err := os.Stat(s.Path("b1", "snapshots", "s1", "rootfs", "bin", "busybox")); err != nil {
		t.Fatalf("snapshot rootfs view: %v", err)
	}
	if err := os.WriteFile(s.Path("b1", "snapshots", "s1", "data", "x"), []byte("no"), 0o644); !errnoIs(err, syscall.EROFS) && !errnoIs(err, syscall.EACCES) {
		t.Fatalf("snapshot data is writable: %v", err)
	}

	s.MustSh(`echo changed > $M/b1/data/x`)
	if out, code := s.Exec("b1", "sh", "-c", "echo after > /root/marker"); code != 0 {
		t.Fatalf("marker: %s", out)
	}
	s.MustSh(`echo 'restore s1' > $M/b1/ctl`)
	if got := s.Read("b1", "data", "x"); got != "hello\n" {
		t.Fatalf("data/x after restore = %q", got)
	}
	if out, _ := s.Exec("b1", "cat", "/root/marker"); out != "before\n" {
		t.Fatalf("rootfs after restore: marker %q", out)
	}
	st = s.StatusFields("b1")
	if st["state"] != "running" || st["pid"] == pid {
		t.Fatalf("status after restore: %v", st)
	}
	if ls := s.MustSh(`ls $M/b1/snapshots/`); ls != "pre-restore-2\ns1\n" {
		t.Fatalf("snapshots after restore: %q", ls)
	}
	if got := s.Read("b1", "snapshots", "pre-restore-2", "data", "x"); got != "changed\n" {
		t.Fatalf("the pre-restore snapshot keeps what was there: %q", got)
	}

	s.MustSh(`echo stop > $M/b1/ctl`)
	if st := s.StatusFields("b1"); st["state"] != "stopped" || st["pid"] != "-" || st["exit"] != "0" {
		t.Fatalf("status after stop: %v", st)
	}
	events := s.MustSh(`dd if=$M/b1/events iflag=nonblock status=none`)
	for _, typ := range []string{" create ", " start ", " snapshot ", " restore ", " stop "} {
		if !strings.Contains(events, typ) {
			t.Fatalf("events lack %q:\n%s", typ, events)
		}
	}

	if err := os.Remove(s.Path("b1")); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(s.Mnt); len(entries) != 0 {
		t.Fatalf("ls after rmdir: %v", entries)
	}
	if _, err := s.Runtime.Container(ctx, "b1"); err == nil {
		t.Fatal("container left after rmdir")
	}
	if _, err := s.Store.GetBot(ctx, "b1"); err == nil {
		t.Fatal("record left after rmdir")
	}
	kept, _ := filepath.Glob(filepath.Join(s.Root, "trash", "b1-*", "data", "x"))
	if len(kept) != 1 {
		t.Fatalf("data not kept aside: %v", kept)
	}
	if b, _ := os.ReadFile(kept[0]); string(b) != "hello\n" {
		t.Fatalf("kept data/x = %q", b)
	}
	_ = runtime.ContainerID
	_ = time.Second
}

// TestOneAtATime: concurrent ctl writes to one bot run one after the
// other: every write succeeds and the recorded starts and stops
// alternate.
func TestOneAtATime(t *testing.T) {
	s := newStack(t, fsnodes.Options{})
	must(t, os.Mkdir(s.Path("busy"), 0o755))
	s.MustCtl("busy", "start")
	writes := []string{"restart", "snapshot a", "restart", "snapshot b", "stop", "start", "restart"}
	errs := make(chan error, len(writes))
	for _, w := range writes {
		go func() { errs <- s.Ctl("busy", w) }()
	}
	for range writes {
		if err := <-errs; err != nil {
			t.Fatalf("a concurrent ctl write failed: %v (err: %s)", err, s.Read("busy", "err"))
		}
	}
	events := s.MustSh(`dd if=$M/busy/events iflag=nonblock status=none`)
	running := false
	for _, line := range strings.Split(strings.TrimSpace(events), "\n") {
		f := strings.Fields(line)
		switch f[1] {
		case "start":
			if running {
				t.Fatalf("two starts in a row:\n%s", events)
			}
			running = true
		case "stop":
			if !running {
				t.Fatalf("a stop of a stopped bot was recorded:\n%s", events)
			}
			running = false
		}
	}
	if st := s.StatusFields("busy"); (st["state"] == "running") != running {
		t.Fatalf("status %s disagrees with the events:\n%s", st["state"], events)
	}
	if st := s.StatusFields("busy"); st["snapshots"] != "2" {
		t.Fatalf("snapshots: %v", st)
	}
	// A snapshot without a name is named after its version.
	s.MustCtl("busy", "snapshot")
	if _, err := os.Stat(s.Path("busy", "snapshots", "v3")); err != nil {
		t.Fatalf("default snapshot name: %v", err)
	}
}

// TestStartRecreates: start makes the container again if it went missing,
// on the rootfs it had.
func TestStartRecreates(t *testing.T) {
	s := newStack(t, fsnodes.Options{})
	ctx := t.Context()
	must(t, os.Mkdir(s.Path("phoenix"), 0o755))
	s.MustCtl("phoenix", "start")
	if out, code := s.Exec("phoenix", "sh", "-c", "echo kept > /root/marker"); code != 0 {
		t.Fatal(out)
	}
	s.MustCtl("phoenix", "stop")
	// The container goes (its rootfs stays), behind memohfs' back.
	c, err := s.Runtime.Client().LoadContainer(namespaces.WithNamespace(ctx, s.Runtime.Config().Namespace), "memohfs-phoenix")
	must(t, err)
	must(t, c.Delete(namespaces.WithNamespace(ctx, s.Runtime.Config().Namespace)))
	s.MustCtl("phoenix", "start")
	if out, _ := s.Exec("phoenix", "cat", "/root/marker"); out != "kept\n" {
		t.Fatalf("marker after re-create: %q", out)
	}
	if ev := s.MustSh(`dd if=$M/phoenix/events iflag=nonblock status=none`); !strings.Contains(ev, " recreate ") || !strings.Contains(ev, "kept=true") {
		t.Fatalf("no recreate event:\n%s", ev)
	}
}
