package hardness

import (
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/memohfs/memohfs/internal/testenv"
	"github.com/memohfs/memohfs/internal/teststack"
	"github.com/memohfs/memohfs/store"
)

// TestContainerdRestart restarts containerd under running bots while ctl
// writes are in flight: the bots keep running; each write in flight either
// completes or fails with EIO and its reason; memohfs reconnects by itself
// (events included) and ctl works again within 5 s.
//
// Not parallel: it restarts the daemon the package's tests share.
func TestContainerdRestart(t *testing.T) {
	env := testenv.Get(t)
	s := newStack(t, teststack.Options{})
	for _, b := range []string{"keep", "busy"} {
		must(t, os.Mkdir(s.Path(b), 0o755))
		s.MustCtl(b, "start")
	}
	keep := s.Status("keep")

	var wg sync.WaitGroup
	stop := make(chan struct{})
	type outcome struct {
		verb   string
		err    error
		reason string
	}
	var mu sync.Mutex
	var outcomes []outcome
	wg.Add(1)
	go func() {
		defer wg.Done()
		verbs := []string{"snapshot", "stop 1", "start", "restart"}
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			v := verbs[i%len(verbs)]
			err := s.Ctl("busy", v)
			o := outcome{verb: v, err: err}
			if err != nil {
				o.reason = s.ReadOrError("busy", "err")
			}
			mu.Lock()
			outcomes = append(outcomes, o)
			mu.Unlock()
		}
	}()
	time.Sleep(300 * time.Millisecond)
	env.Containerd.Restart(t)
	restarted := time.Now()
	// ctl works again within 5 s.
	var back time.Duration
	for {
		if err := s.Ctl("keep", "snapshot"); err == nil {
			back = time.Since(restarted)
			break
		}
		if time.Since(restarted) > 5*time.Second {
			t.Fatalf("ctl does not work 5 s after containerd came back: %s", s.ReadOrError("keep", "err"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("ctl worked again %s after containerd came back", back.Round(time.Millisecond))
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()

	failed := 0
	for _, o := range outcomes {
		if o.err == nil {
			continue
		}
		failed++
		if fileOpErrno(o.err) != syscall.EIO && fileOpErrno(o.err) != syscall.EBUSY {
			t.Errorf("%q in flight during the restart: %v, want success, EIO or EBUSY", o.verb, o.err)
		}
		if strings.TrimSpace(o.reason) == "" {
			t.Errorf("%q failed without a reason in err", o.verb)
		}
	}
	t.Logf("%d writes during the restart, %d failed with a reason", len(outcomes), failed)

	// The bot that was left alone ran on, same task.
	if got := s.Status("keep"); got.State != store.StateRunning || got.Pid != keep.Pid {
		t.Fatalf("keep after the restart: %+v (pid was %d)", got, keep.Pid)
	}
	if err := syscall.Kill(keep.Pid, 0); err != nil {
		t.Fatalf("keep's task is gone: %v", err)
	}
	// Events flow again: a task killed now shows stopped.
	must(t, syscall.Kill(keep.Pid, syscall.SIGKILL))
	waitFor(t, 5*time.Second, "an exit after the restart shows in status", func() bool {
		return s.Status("keep").State == store.StateStopped
	})
	if s.Status("busy").State == store.StateRunning {
		s.MustCtl("busy", "stop")
	}
	waitFor(t, 10*time.Second, "check after the restart", func() bool {
		rep, err := s.Control.Check(t.Context())
		return err == nil && rep.OK()
	})
	s.Check("after the containerd restart")
}
