package main

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/memohfs/memohfs/internal/embedded"
	"github.com/memohfs/memohfs/internal/testenv"
)

// TestCrash kills memohfs with SIGKILL at random points of a stream of
// ctl writes (start, stop, restart, snapshot, restore), mkdir and rmdir on
// several bots while a writer fsyncs files into one bot's data/. A kill
// point is a random number of operations into the round, taken while
// operations are in flight (not a time: a loaded machine would move it).
// After each kill it starts memohfs again and `memohfs check` must find
// Postgres, containerd, the disk and the mount in agreement (every record
// with its runtime object and back, no snapshot without its record or
// record without its snapshot, no task running that status calls
// stopped, no leaked lease or netns), every fsync'd byte must be there,
// and every bot must take operations again (its status read and a ctl
// write succeed). Every refusal seen on the way must carry an errno the
// documented table allows for it (docs/semantics.md), and the kills must
// have cut operations off (else they never hit their window). When it
// ends nothing of the instance runs. 50 kill points here, 1,000 under
// make soak.
func TestCrash(t *testing.T) {
	kills := 50
	if os.Getenv("MEMOHFS_SOAK") != "" {
		kills = 1000
	}
	env := testenv.Get(t)
	state, mnt := upInstance(t)
	d := startUp(t, state, mnt)
	seed := time.Now().UnixNano()
	r := rand.New(rand.NewSource(seed))
	t.Logf("seed %d, %d kill points", seed, kills)

	keeper, churn := "keep", []string{"c1", "c2"}
	bots := append([]string{keeper}, churn...)
	for _, b := range bots {
		sh(t, "mkdir "+filepath.Join(mnt, b))
	}
	sh(t, "echo start > "+filepath.Join(mnt, keeper, "ctl"))

	durable := map[string][32]byte{} // keeper's data file -> sha256 of what was fsync'd
	// cut counts the operations a kill cut off (they began before it and
	// failed with ENOTCONN or ECONNABORTED): the kills' window. Those
	// begun after it fail the same way and are not counted.
	var ops, refused, cut, hits, wedgedKills, writerCut int
	checksAgain := 0               // restarts whose first check saw a task end not yet handled
	outcomes := map[string]int{}   // "op: errno" -> count, refusals
	unexpected := map[string]int{} // the same, for errnos the table does not allow
	why := map[string]string{}     // the bot's err after the first of each unexpected one
	for k := 0; k < kills; k++ {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var mu sync.Mutex
		var roundOps atomic.Int64 // operations the operators finished this round
		var killedAt atomic.Int64 // when the kill was sent (Unix ns), 0 before
		roundCut := 0             // operations this kill cut off (under mu)
		done := map[string][32]byte{}
		var wedged atomic.Bool
		// The writer: files in keeper's data/, each recorded once fsync'd.
		wg.Add(1)
		go func() {
			defer wg.Done()
			wr := rand.New(rand.NewSource(seed + int64(k)))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				name := fmt.Sprintf("k%03d-%03d", k, i)
				data := make([]byte, 1+wr.Intn(64<<10))
				wr.Read(data)
				err := writeSynced(filepath.Join(mnt, keeper, "data", name), data)
				mu.Lock()
				switch {
				case err == nil:
					done[name] = sha256.Sum256(data)
				case cutOff(err):
					// The next daemon replaces a dead mount from beneath:
					// the mount point is never bare, so a write meets the
					// dead mount (cut off) or the new one, never the
					// host dir under them (ENOENT, or a file on the host
					// disk that the new mount hides).
					writerCut++
				default:
					unexpected["write+fsync in data/: "+errnoName(err)]++
				}
				mu.Unlock()
			}
		}()
		// The operators: random verbs on every bot.
		for i, b := range bots {
			wg.Add(1)
			go func(b string, seed int64) {
				defer wg.Done()
				or := rand.New(rand.NewSource(seed))
				for {
					select {
					case <-stop:
						return
					default:
					}
					began := time.Now().UnixNano()
					op, err := crashOp(or, mnt, b, b == keeper)
					roundOps.Add(1)
					mu.Lock()
					ops++
					switch {
					case err == nil:
					case cutOff(err):
						if k := killedAt.Load(); k != 0 && began < k {
							cut++
							roundCut++
						}
					default:
						refused++
						outcomes[op+": "+errnoName(err)]++
						if !allowedRefusal(op, err) {
							key := op + ": " + errnoName(err)
							if unexpected[key]++; unexpected[key] == 1 {
								e, _ := os.ReadFile(filepath.Join(mnt, b, "err"))
								why[key] = strings.TrimSpace(string(e))
							}
						}
					}
					mu.Unlock()
					if cutOff(err) {
						return // the daemon is gone (or its hung connection was aborted)
					}
				}
			}(b, seed+int64(1000*k+i))
		}
		// The kill point: a random number of operations into the round,
		// with the next ones in flight.
		target := int64(1 + r.Intn(8))
		eventually(t, 5*time.Minute, fmt.Sprintf("kill point %d: %d operations done", k+1, target), func() bool {
			return roundOps.Load() >= target
		})
		killedAt.Store(time.Now().UnixNano())
		d.cmd.Process.Kill()
		old := d
		// A kill that lands while memohfs tells the kernel to drop an
		// entry (the notify waits, unkillably, for the directory's lock,
		// which a mkdir in flight there holds while it waits for the
		// dead server) leaves the process unable to exit until its
		// connection is aborted: what the next memohfs up does when it
		// finds the mount hung. Waiting here is not a deadline the test
		// can miss: a process that is only slow to exit takes the same
		// path, and the next up aborts a connection that is not hung
		// just as well.
		select {
		case <-old.exited:
		case <-time.After(5 * time.Second):
			wedged.Store(true)
		}
		if !wedged.Load() {
			close(stop)
			wg.Wait()
		}
		reconciles := strings.Count(readFile(d.log), "msg=reconcile ")
		d = startUp(t, state, mnt)
		if wedged.Load() {
			wedgedKills++
			select {
			case <-old.exited:
			case <-time.After(2 * time.Minute):
				t.Fatalf("kill point %d: the killed memohfs did not exit after the next one cleared its mount", k+1)
			}
			close(stop)
			wg.Wait()
		}
		for name, sum := range done {
			durable[name] = sum
		}
		if roundCut > 0 {
			hits++
		}
		eventually(t, 2*time.Minute, "reconcile after the restart", func() bool {
			return strings.Count(readFile(d.log), "msg=reconcile ") > reconciles
		})
		// A task may end by itself at any moment (one the killed memohfs
		// had asked to stop, say): until the daemon has handled its exit
		// event, check sees it ended with the record still saying running.
		// Agreement must come, not last forever from the first check.
		for tries := 1; ; tries++ {
			out, err := runCheckBin(t, env, state, mnt)
			if err == nil {
				break
			}
			if tries == 1 {
				checksAgain++
			}
			if tries == 50 {
				t.Fatalf("kill point %d: memohfs check disagreed %d times in a row: %v\n%s\nlog:\n%s", k+1, tries, err, out, embedded.Tail(d.log, 40))
			}
			time.Sleep(100 * time.Millisecond)
		}
		for name, sum := range durable {
			b, err := os.ReadFile(filepath.Join(mnt, keeper, "data", name))
			if err != nil || sha256.Sum256(b) != sum {
				t.Fatalf("kill point %d: fsync'd file %s lost or changed: %v", k+1, name, err)
			}
		}
		for _, b := range bots {
			if err := acceptsOps(mnt, b); err != nil {
				t.Fatalf("kill point %d: bot %s after the restart: %v\nlog:\n%s", k+1, b, err, embedded.Tail(d.log, 40))
			}
		}
	}
	t.Logf("%d kill points survived (%d left the killed process wedged until the next up aborted its connection; %d needed check again): %d operations, %d cut off by a kill (%d kills cut one or more), %d refused: %v; %d writes cut off; %d fsync'd files intact, 0 lost, 0 leaked",
		kills, wedgedKills, checksAgain, ops, cut, hits, refused, outcomes, writerCut, len(durable))
	if len(unexpected) > 0 {
		t.Errorf("refusals with an errno the table does not allow for them: %v; the bot's err after the first of each: %q", unexpected, why)
	}
	if hits == 0 {
		t.Errorf("no operation was cut off by any of %d kills: the kills never landed while one ran", kills)
	}
	for _, b := range bots {
		if err := os.WriteFile(filepath.Join(mnt, b, "ctl"), []byte("stop 1"), 0); err != nil {
			t.Errorf("stop %s at the end: %v", b, err)
		}
	}
	runDir, err := embedded.RunDir(state)
	if err != nil {
		t.Fatal(err)
	}
	// What containerd holds once every bot is stopped, for the report.
	tasks := "(ctr not found)"
	if bin, err := testenv.ContainerdBinDir(); err == nil {
		out, _ := exec.Command(filepath.Join(bin, "ctr"), "--address", filepath.Join(runDir, "ctrd", "c.sock"),
			"-n", "memohfs", "tasks", "ls").CombinedOutput()
		tasks = string(out)
	}
	d.stop()
	// The mount point's own dir holds nothing: no operation of a round
	// that ran on across a restart (a wedged kill) ever landed on it
	// between two daemons.
	if left, err := os.ReadDir(mnt); err != nil || len(left) > 0 {
		t.Errorf("the mount point's dir under the mount holds %v (%v): operations landed on it while daemons were swapped (%d wedged kills ran operations across the restart)", left, err, wedgedKills)
	}
	// Nothing of the instance runs once its bots are stopped and it has
	// exited: no shim (its working dir is its bundle in the state dir),
	// no container process, no daemon.
	left := testenv.ProcsTiedTo(state, runDir)
	for deadline := time.Now().Add(time.Minute); len(left) > 0 && time.Now().Before(deadline); left = testenv.ProcsTiedTo(state, runDir) {
		time.Sleep(50 * time.Millisecond) // shims exit once their task is deleted
	}
	if len(left) > 0 {
		t.Errorf("processes of the instance still run after its bots were stopped and it exited: %v\ncontainerd's tasks before it exited:\n%s", left, tasks)
	}
}

// cutOff reports whether err is what a caller gets when the daemon dies
// under its request (ENOTCONN) or its hung connection is aborted
// (ECONNABORTED).
func cutOff(err error) bool {
	return errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED)
}

// allowedErrnos are, for each operation TestCrash does, the errnos the
// table in docs/semantics.md allows for it here (root, valid names, no
// writes under snapshots/<s>/): ENOENT for a bot or snapshot that is
// gone (a kill cut a rmdir+mkdir in two and the restart finished the
// delete), EEXIST for a name
// taken (a bot a cut-off mkdir made; a snapshot's default name), EBUSY
// for the wrong state (rmdir of a running bot, dropping the snapshot the
// rootfs builds on), EIO for containerd or Postgres unreachable or a step
// that broke, EINTR for a writer that gave up waiting. EINVAL (unknown
// verb, wrong argument, bad name) is allowed for none: the test sends
// none of those. A verb with no name (start, stop, restart) has no name
// to be taken: EEXIST from it is not in the table.
var allowedErrnos = map[string][]syscall.Errno{
	"ctl start":      {syscall.ENOENT, syscall.EBUSY, syscall.EIO, syscall.EINTR},
	"ctl stop":       {syscall.ENOENT, syscall.EBUSY, syscall.EIO, syscall.EINTR},
	"ctl restart":    {syscall.ENOENT, syscall.EBUSY, syscall.EIO, syscall.EINTR},
	"ctl snapshot":   {syscall.ENOENT, syscall.EEXIST, syscall.EBUSY, syscall.EIO, syscall.EINTR},
	"ctl restore":    {syscall.ENOENT, syscall.EBUSY, syscall.EIO, syscall.EINTR},
	"mkdir bot":      {syscall.ENOENT, syscall.EEXIST, syscall.EIO, syscall.EINTR},
	"rmdir bot":      {syscall.ENOENT, syscall.EBUSY, syscall.EIO, syscall.EINTR},
	"rmdir snapshot": {syscall.ENOENT, syscall.EBUSY, syscall.EIO, syscall.EINTR},
}

// allowedRefusal reports whether op's refusal with err is one
// allowedErrnos lists.
func allowedRefusal(op string, err error) bool {
	for _, e := range allowedErrnos[op] {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// acceptsOps checks that a bot takes operations: a churn bot a kill left
// removed is made again (mkdir must succeed), its status reads, and a ctl
// write that leaves it as it is succeeds (start when running, stop when
// not), going through its operation lock like any verb.
func acceptsOps(mnt, bot string) error {
	dir := filepath.Join(mnt, bot)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.Mkdir(dir, 0o755); err != nil {
			return fmt.Errorf("mkdir: %w", err)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "status"))
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	verb := "stop 1"
	if strings.Contains(string(b), "\nstate running\n") {
		verb = "start"
	}
	if err := os.WriteFile(filepath.Join(dir, "ctl"), []byte(verb), 0); err != nil {
		e, _ := os.ReadFile(filepath.Join(dir, "err"))
		return fmt.Errorf("ctl %q: %w (err: %s; status:\n%s)", verb, err, strings.TrimSpace(string(e)), b)
	}
	return nil
}

// crashOp does one random operation on bot through the mount, and says
// which; the keeper is never removed or restored (its data/ is the
// durability witness).
func crashOp(r *rand.Rand, mnt, bot string, keeper bool) (string, error) {
	ctl := func(v string) (string, error) {
		verb, _, _ := strings.Cut(v, " ")
		return "ctl " + verb, os.WriteFile(filepath.Join(mnt, bot, "ctl"), []byte(v), 0)
	}
	if _, err := os.Stat(filepath.Join(mnt, bot)); errors.Is(err, os.ErrNotExist) && !keeper {
		return "mkdir bot", os.Mkdir(filepath.Join(mnt, bot), 0o755) // removed (a kill cut its rmdir+mkdir in two)
	}
	switch n := r.Intn(10); {
	case n < 2:
		return ctl("start")
	case n < 4:
		return ctl("stop 1")
	case n == 4:
		return ctl("restart")
	case n < 7:
		return ctl("snapshot")
	case n == 7 && !keeper:
		entries, _ := os.ReadDir(filepath.Join(mnt, bot, "snapshots"))
		if len(entries) == 0 {
			return ctl("snapshot")
		}
		return ctl("restore " + entries[r.Intn(len(entries))].Name())
	case n == 8 && !keeper:
		if op, err := ctl("stop 0"); err != nil {
			return op, err
		}
		if err := os.Remove(filepath.Join(mnt, bot)); err != nil {
			return "rmdir bot", err
		}
		return "mkdir bot", os.Mkdir(filepath.Join(mnt, bot), 0o755)
	case n == 9:
		entries, _ := os.ReadDir(filepath.Join(mnt, bot, "snapshots"))
		if len(entries) > 3 {
			return "rmdir snapshot", os.Remove(filepath.Join(mnt, bot, "snapshots", entries[0].Name()))
		}
		return ctl("snapshot")
	default:
		return ctl("start")
	}
}

// errnoName names the errno in err, or says what else it was.
func errnoName(err error) string {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e.Error()
	}
	return err.Error()
}

func writeSynced(p string, data []byte) error {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// runCheckBin runs `memohfs check` on an up instance, as an admin would.
func runCheckBin(t *testing.T, env *testenv.Env, state, mnt string) (string, error) {
	cmd := exec.Command(binary(t), "check", "--up", "--state-dir", state, "--mount", mnt,
		"--bridge", env.Net.Bridge, "--subnet", env.Net.Subnet)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}
