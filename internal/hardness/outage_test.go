package hardness

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/memohfs/memohfs/internal/testenv"
	"github.com/memohfs/memohfs/internal/teststack"
	"github.com/memohfs/memohfs/runtime"
	"github.com/memohfs/memohfs/store"
)

// TestPostgresOutage: with Postgres stopped, data/ keeps working and
// status stays readable; every ctl write, mkdir and rmdir fails with EIO
// and the reason in err, and changes nothing; a bot that dies meanwhile
// shows stopped at once and is recorded so once Postgres is back; memohfs
// recovers by itself, without a restart.
func TestPostgresOutage(t *testing.T) {
	env := testenv.Get(t)
	pg := env.NewPostgres(t)
	s := newStack(t, teststack.Options{DatabaseURL: pg.Database(t, "outage")})
	for _, b := range []string{"up1", "down1", "dies"} {
		must(t, os.Mkdir(s.Path(b), 0o755))
	}
	s.MustCtl("up1", "start")
	s.MustCtl("dies", "start")
	must(t, os.WriteFile(s.Path("up1", "data", "before"), []byte("before"), 0o644))
	up1 := s.Status("up1")

	must(t, pg.Stop())

	// data/ works throughout, both ways.
	for _, b := range []string{"up1", "down1"} {
		p := s.Path(b, "data", "during")
		must(t, os.WriteFile(p, []byte("during the outage"), 0o644))
		if got, err := os.ReadFile(p); err != nil || string(got) != "during the outage" {
			t.Fatalf("data/ of %s during the outage: %q %v", b, got, err)
		}
		must(t, os.Rename(p, p+".moved"))
	}
	if got := s.Status("up1"); got.State != store.StateRunning || got.Pid != up1.Pid {
		t.Fatalf("status during the outage: %+v", got)
	}

	// Every change is refused with EIO, and the reason.
	for _, c := range []struct{ bot, verb string }{
		{"up1", "stop"}, {"up1", "restart"}, {"up1", "snapshot s1"}, {"down1", "start"},
		{"down1", "autostart on"}, {"up1", "start\nstop"},
	} {
		err := s.Ctl(c.bot, c.verb)
		if fileOpErrno(err) != syscall.EIO {
			t.Errorf("%q > %s/ctl during the outage: %v, want EIO", c.verb, c.bot, err)
		}
		if reason := s.ReadOrError(c.bot, "err"); !strings.Contains(reason, "Postgres") {
			t.Errorf("%q > %s/ctl: err says %q, want the reason", c.verb, c.bot, reason)
		}
	}
	if err := os.Mkdir(s.Path("newbot"), 0o755); fileOpErrno(err) != syscall.EIO {
		t.Errorf("mkdir during the outage: %v, want EIO", err)
	}
	if _, err := os.Lstat(filepath.Join(s.Root, "bots", "newbot")); err == nil {
		t.Error("a refused mkdir left a data dir")
	}
	if err := os.Mkdir(s.Path("up1", "snapshots", "s2"), 0o755); fileOpErrno(err) != syscall.EIO {
		t.Errorf("mkdir snapshots/s2 during the outage: %v, want EIO", err)
	}
	if err := syscall.Rmdir(s.Path("down1")); err != syscall.EIO {
		t.Errorf("rmdir during the outage: %v, want EIO", err)
	}

	// A bot that dies meanwhile shows so at once.
	dies := s.Status("dies")
	must(t, syscall.Kill(dies.Pid, syscall.SIGKILL))
	waitFor(t, 5*time.Second, "status of a bot killed during the outage", func() bool {
		return s.Status("dies").State == store.StateStopped
	})

	// Nothing changed in the runtime.
	ti, err := s.Runtime.Task(t.Context(), "up1")
	if err != nil || ti.State != runtime.TaskRunning || int(ti.Pid) != up1.Pid {
		t.Fatalf("up1 after refused writes: %+v %v", ti, err)
	}
	if ti, _ := s.Runtime.Task(t.Context(), "down1"); ti.State == runtime.TaskRunning {
		t.Fatal("down1 started although the start was refused")
	}
	if list, _ := s.Runtime.Snapshots(t.Context(), "up1"); len(list) > 0 {
		for _, sn := range list {
			if sn.Role == "snapshot" {
				t.Fatalf("a refused snapshot exists: %+v", sn)
			}
		}
	}

	start := time.Now()
	must(t, pg.Start())
	// It recovers by itself.
	waitFor(t, 15*time.Second, "ctl works again after the outage", func() bool {
		return s.Ctl("up1", "snapshot s1") == nil
	})
	t.Logf("ctl works again %s after Postgres came back", time.Since(start).Round(time.Millisecond))
	waitFor(t, 15*time.Second, "the exit during the outage is recorded", func() bool {
		rep, err := s.Control.Check(t.Context())
		return err == nil && rep.OK()
	})
	s.MustCtl("down1", "start")
	s.MustCtl("up1", "stop")
	must(t, os.Mkdir(s.Path("newbot"), 0o755))
	for _, b := range []string{"up1", "down1"} {
		if got, err := os.ReadFile(s.Path(b, "data", "during.moved")); err != nil || string(got) != "during the outage" {
			t.Fatalf("data written during the outage: %q %v", got, err)
		}
	}
	s.MustCtl("down1", "stop")
	s.Check("after the outage")
}
