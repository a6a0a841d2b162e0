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
	"syscall"
	"testing"
	"time"

	"github.com/memohfs/memohfs/internal/embedded"
	"github.com/memohfs/memohfs/internal/testenv"
)

// TestCrash kills memohfs with SIGKILL at random points of a stream of
// ctl writes (start, stop, restart, snapshot, restore), mkdir and rmdir on
// several bots while a writer fsyncs files into one bot's data/. After
// each kill it starts memohfs again and `memohfs check` must find
// Postgres, containerd, the disk and the mount in agreement (every record
// with its runtime object and back, no snapshot without its record or
// record without its snapshot, no task running that status calls
// stopped, no leaked lease or netns), and every fsync'd byte must be
// there. 50 kill points here, 1,000 under make soak.
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
	for _, b := range append([]string{keeper}, churn...) {
		sh(t, "mkdir "+filepath.Join(mnt, b))
	}
	sh(t, "echo start > "+filepath.Join(mnt, keeper, "ctl"))

	durable := map[string][32]byte{} // keeper's data file -> sha256 of what was fsync'd
	var ops, refused, wedgedKills int
	outcomes := map[string]int{}
	for k := 0; k < kills; k++ {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var mu sync.Mutex
		done := map[string][32]byte{}
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
				if writeSynced(filepath.Join(mnt, keeper, "data", name), data) == nil {
					mu.Lock()
					done[name] = sha256.Sum256(data)
					mu.Unlock()
				}
			}
		}()
		// The operators: random verbs on every bot.
		for i, b := range append([]string{keeper}, churn...) {
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
					err := crashOp(or, mnt, b, b == keeper)
					if errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED) {
						return // the daemon is gone (or its hung connection was aborted)
					}
					mu.Lock()
					ops++
					if err != nil {
						refused++
						outcomes[errnoName(err)]++
					}
					mu.Unlock()
				}
			}(b, seed+int64(1000*k+i))
		}
		time.Sleep(time.Duration(50+r.Intn(550)) * time.Millisecond)
		d.cmd.Process.Kill()
		old := d
		// A kill that lands while memohfs tells the kernel to drop an
		// entry (the notify waits, unkillably, for the directory's lock,
		// which a mkdir in flight there holds while it waits for the
		// dead server) leaves the process unable to exit until its
		// connection is aborted: what the next memohfs up does when it
		// finds the mount hung.
		wedged := false
		select {
		case <-old.exited:
		case <-time.After(5 * time.Second):
			wedged = true
		}
		if !wedged {
			close(stop)
			wg.Wait()
		}
		reconciles := strings.Count(readFile(d.log), "msg=reconcile ")
		d = startUp(t, state, mnt)
		if wedged {
			wedgedKills++
			select {
			case <-old.exited:
			case <-time.After(30 * time.Second):
				t.Fatalf("kill point %d: the killed memohfs did not exit after the next one cleared its mount", k+1)
			}
			close(stop)
			wg.Wait()
		}
		for name, sum := range done {
			durable[name] = sum
		}
		eventually(t, 60*time.Second, "reconcile after the restart", func() bool {
			return strings.Count(readFile(d.log), "msg=reconcile ") > reconciles
		})
		if out, err := runCheckBin(t, env, state, mnt); err != nil {
			t.Fatalf("kill point %d: memohfs check: %v\n%s\nlog:\n%s", k+1, err, out, embedded.Tail(d.log, 40))
		}
		for name, sum := range durable {
			b, err := os.ReadFile(filepath.Join(mnt, keeper, "data", name))
			if err != nil || sha256.Sum256(b) != sum {
				t.Fatalf("kill point %d: fsync'd file %s lost or changed: %v", k+1, name, err)
			}
		}
	}
	t.Logf("%d kill points survived (%d left the killed process wedged until the next up aborted its connection): %d operations (%d refused or cut off: %v), %d fsync'd files intact, 0 lost, 0 leaked",
		kills, wedgedKills, ops, refused, outcomes, len(durable))
	for _, b := range append([]string{keeper}, churn...) {
		if _, err := os.Stat(filepath.Join(mnt, b)); err == nil {
			exec.Command("sh", "-c", "echo stop > "+filepath.Join(mnt, b, "ctl")).Run()
		}
	}
	d.stop()
}

// crashOp does one random operation on bot through the mount; the keeper
// is never removed or restored (its data/ is the durability witness).
func crashOp(r *rand.Rand, mnt, bot string, keeper bool) error {
	ctl := func(v string) error { return os.WriteFile(filepath.Join(mnt, bot, "ctl"), []byte(v), 0) }
	if _, err := os.Stat(filepath.Join(mnt, bot)); errors.Is(err, os.ErrNotExist) && !keeper {
		return os.Mkdir(filepath.Join(mnt, bot), 0o755) // removed (a kill cut its rmdir+mkdir in two)
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
		if err := ctl("stop 0"); err != nil {
			return err
		}
		if err := os.Remove(filepath.Join(mnt, bot)); err != nil {
			return err
		}
		return os.Mkdir(filepath.Join(mnt, bot), 0o755)
	case n == 9:
		entries, _ := os.ReadDir(filepath.Join(mnt, bot, "snapshots"))
		if len(entries) > 3 {
			return os.Remove(filepath.Join(mnt, bot, "snapshots", entries[0].Name()))
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
