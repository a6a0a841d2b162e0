package hardness

import (
	"fmt"
	"math/rand"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/memohfs/memohfs/internal/teststack"
	"github.com/memohfs/memohfs/runtime"
	"github.com/memohfs/memohfs/store"
)

// TestConcurrentWriters: 100 writers issue random verbs on 10 bots at once.
// Afterwards status, containerd and Postgres agree on every bot, and each
// bot's events form a valid sequence: no start of a running bot, no stop
// or exit of one that was not running, nothing before create.
func TestConcurrentWriters(t *testing.T) {
	s := newStack(t, teststack.Options{})
	const bots = 10
	writers, perWriter := count(100, 400), count(3, 10)
	for i := 0; i < bots; i++ {
		must(t, os.Mkdir(s.Path(fmt.Sprintf("c%d", i)), 0o755))
	}
	verbs := []string{"start", "stop 1", "restart", "snapshot", "autostart on", "autostart off",
		"start\nsnapshot", "stop 0\nstart", "bogus"}
	seed := time.Now().UnixNano()
	t.Logf("seed %d: %d writers x %d writes over %d bots", seed, writers, perWriter, bots)
	var wg sync.WaitGroup
	var mu sync.Mutex
	tally := map[string]int{}
	start := time.Now()
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewSource(seed + int64(w)))
			for i := 0; i < perWriter; i++ {
				bot := fmt.Sprintf("c%d", r.Intn(bots))
				verb := verbs[r.Intn(len(verbs))]
				err := s.Ctl(bot, verb)
				key := "ok"
				switch {
				case err == nil:
				case verb == "bogus" && fileOpErrno(err) == syscall.EINVAL:
					key = "EINVAL (bogus verb)"
				default:
					key = fmt.Sprintf("%q: %v (err: %s)", verb, fileOpErrno(err), strings.TrimSpace(s.ReadOrError(bot, "err")))
				}
				mu.Lock()
				tally[key]++
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	t.Logf("%d writes in %s: %v", writers*perWriter, time.Since(start).Round(time.Millisecond), tally)
	for k := range tally {
		if k != "ok" && k != "EINVAL (bogus verb)" {
			t.Errorf("unexpected outcome %s (%d times)", k, tally[k])
		}
	}
	if t.Failed() {
		for i := 0; i < bots; i++ {
			if ev := s.ReadOrError(fmt.Sprintf("c%d", i), "events"); strings.Contains(ev, " error ") {
				t.Logf("c%d events:\n%s", i, ev)
			}
		}
	}

	rep := s.Check("after the writers")
	if rep.Bots != bots {
		t.Fatalf("check saw %d bots", rep.Bots)
	}
	for i := 0; i < bots; i++ {
		bot := fmt.Sprintf("c%d", i)
		st := s.Status(bot)
		ti, err := s.Runtime.Task(t.Context(), bot)
		if err != nil {
			t.Fatal(err)
		}
		if (st.State == store.StateRunning) != (ti.State == runtime.TaskRunning) {
			t.Errorf("%s: status %s, task %s", bot, st.State, ti.State)
		}
		if err := validSequence(eventTypes(t, s, bot)); err != nil {
			t.Errorf("%s: %v\n%s", bot, err, s.ReadOrError(bot, "events"))
		}
	}
}

// eventTypes reads a bot's events file (without waiting for more).
func eventTypes(t *testing.T, s *stack, bot string) []string {
	t.Helper()
	f, err := os.OpenFile(s.Path(bot, "events"), os.O_RDONLY|syscall.O_NONBLOCK, 0)
	must(t, err)
	defer f.Close()
	var b strings.Builder
	buf := make([]byte, 64<<10)
	for {
		n, err := f.Read(buf)
		b.Write(buf[:n])
		if n == 0 || err != nil {
			break
		}
	}
	var types []string
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if f := strings.Fields(line); len(f) >= 2 {
			types = append(types, f[1])
		}
	}
	return types
}

// validSequence checks a bot's event types against its life cycle.
func validSequence(types []string) error {
	if len(types) == 0 || types[0] != "create" {
		return fmt.Errorf("events do not begin with create: %v", types)
	}
	running, failed := false, false
	for i, ty := range types[1:] {
		bad := func(why string) error { return fmt.Errorf("event %d (%s): %s", i+2, ty, why) }
		switch ty {
		case "start":
			if running {
				return bad("start of a running bot")
			}
			running, failed = true, false
		case "stop":
			if !running && !failed {
				return bad("stop of a bot that was not running")
			}
			running, failed = false, false
		case "exit":
			if !running && !failed {
				return bad("exit of a bot that was not running")
			}
			running = false
		case "error":
			running, failed = false, true
		case "create":
			return bad("a second create")
		case "snapshot", "autostart", "snapshot-drop", "recreate", "reconcile":
		case "restore":
			if running {
				return bad("restore of a running bot")
			}
		default:
			return bad("unknown event type")
		}
	}
	return nil
}

func TestValidSequence(t *testing.T) {
	for _, c := range []struct {
		types []string
		ok    bool
	}{
		{[]string{"create", "start", "snapshot", "stop", "start", "exit", "start", "stop"}, true},
		{[]string{"create", "start", "error", "stop", "start"}, true},
		{[]string{"create", "start", "start"}, false},
		{[]string{"create", "stop"}, false},
		{[]string{"start"}, false},
		{[]string{"create", "start", "stop", "exit"}, false},
		{[]string{"create", "start", "restore"}, false},
	} {
		if err := validSequence(c.types); (err == nil) != c.ok {
			t.Errorf("%v: %v", c.types, err)
		}
	}
}
