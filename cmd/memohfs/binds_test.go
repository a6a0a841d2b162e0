package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/memohfs/memohfs/internal/embedded"
	"github.com/memohfs/memohfs/mount"
)

// mountPoints lists the mount points at or below dir, one entry per mount
// (a point mounted on twice is listed twice), sorted.
func mountPoints(t *testing.T, dir string) []string {
	t.Helper()
	ms, err := mount.Submounts(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		out = append(out, m.MountPoint)
	}
	sort.Strings(out)
	return out
}

// bindCounts counts the mounts on <mnt>/<bot>/data for every bot, and
// returns the mount points under mnt that are neither mnt nor a data/.
func bindCounts(t *testing.T, mnt string) (perBot map[string]int, other []string) {
	t.Helper()
	perBot = map[string]int{}
	for _, mp := range mountPoints(t, mnt) {
		if mp == filepath.Clean(mnt) {
			continue
		}
		rel := strings.TrimPrefix(mp, filepath.Clean(mnt)+"/")
		if bot, rest, ok := strings.Cut(rel, "/"); ok && rest == "data" {
			perBot[bot]++
			continue
		}
		other = append(other, mp)
	}
	return perBot, other
}

// showsDataDir says whether <mnt>/<bot>/data is the bot's host data dir
// (<state>/data/bots/<bot>): same st_dev and st_ino.
func showsDataDir(t *testing.T, state, mnt, bot string) error {
	t.Helper()
	var host, seen syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(state, "data", "bots", bot), &host); err != nil {
		return err
	}
	if err := syscall.Stat(filepath.Join(mnt, bot, "data"), &seen); err != nil {
		return err
	}
	if host.Dev != seen.Dev || host.Ino != seen.Ino {
		return fmt.Errorf("%s/%s/data is dev %d ino %d, the data dir is dev %d ino %d", mnt, bot, seen.Dev, seen.Ino, host.Dev, host.Ino)
	}
	return nil
}

// waitOneBindEach waits until every bot in bots has exactly one mount on
// its data/, showing its data dir, and nothing else is mounted under mnt.
func waitOneBindEach(t *testing.T, state, mnt string, bots []string, within time.Duration) {
	t.Helper()
	var last string
	deadline := time.Now().Add(within)
	for !func() bool {
		per, other := bindCounts(t, mnt)
		if len(other) > 0 {
			last = fmt.Sprintf("other mounts under %s: %v", mnt, other)
			return false
		}
		for _, b := range bots {
			if per[b] != 1 {
				last = fmt.Sprintf("%s has %d mounts on its data/", b, per[b])
				return false
			}
			if err := showsDataDir(t, state, mnt, b); err != nil {
				last = err.Error()
				return false
			}
		}
		if len(per) != len(bots) {
			last = fmt.Sprintf("binds on %d bots, want %d: %v", len(per), len(bots), per)
			return false
		}
		return true
	}() {
		if time.Now().After(deadline) {
			t.Fatalf("one bind per bot: not within %s; last seen: %s", within, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// inBot runs a shell script inside the bot's container (its mount
// namespace, so /data is the container's own mount of the data dir).
func inBot(t *testing.T, pid, script string) {
	t.Helper()
	out, err := exec.Command("nsenter", "-t", pid, "-m", "-p", "--", "/bin/sh", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("in the bot (pid %s): %s: %v\n%s", pid, script, err, out)
	}
}

// stopWithin is upProcess.stop with a deadline for up's exit (a mount with
// many binds takes a while to come down) and the time it took.
func stopWithin(t *testing.T, d *upProcess, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(within):
		t.Fatalf("memohfs up did not exit within %s of SIGTERM:\n%s", within, embedded.Tail(d.log, 30))
	}
	took := time.Since(start)
	if !d.cmd.ProcessState.Success() {
		t.Fatalf("memohfs up exited with %v:\n%s", d.cmd.ProcessState, embedded.Tail(d.log, 30))
	}
	return took
}

// TestBindsKill9: after kill -9 of `memohfs up --data-binds` its FUSE
// mount is stale with the binds still on it; the next up clears both
// (the lazy detach of the stale mount takes its submounts) and binds
// again: exactly one mount on each bot's data/, showing the bot's data
// dir, and a file the running bot writes in its /data is seen through it.
func TestBindsKill9(t *testing.T) {
	state, mnt := upInstance(t)
	bots := []string{"k1", "k2", "k3"}
	d := startUp(t, state, mnt, "--data-binds")
	for _, b := range bots {
		sh(t, `mkdir `+mnt+`/`+b)
	}
	sh(t, `echo start > `+mnt+`/k1/ctl`)
	waitOneBindEach(t, state, mnt, bots, time.Minute)
	if st := statusOf(t, mnt, "k1"); st["data-path"] != "bind" {
		t.Fatalf("status before kill -9: %v", st)
	}
	pid := statusOf(t, mnt, "k1")["pid"]

	d.cmd.Process.Kill()
	<-d.exited
	if st, _ := mount.Check(mnt); st != mount.Stale {
		t.Fatalf("after kill -9 the mount is %s, want stale", st)
	}
	// The dead server's binds are still there: what the next up must clear.
	per, _ := bindCounts(t, mnt)
	for _, b := range bots {
		if per[b] != 1 {
			t.Fatalf("after kill -9 %s has %d binds, want the 1 it had (the test proves nothing): %v", b, per[b], mountPoints(t, mnt))
		}
	}

	d = startUp(t, state, mnt, "--data-binds")
	if !strings.Contains(embedded.Tail(d.log, 40), "replaced a stale mount") {
		t.Errorf("log does not mention the stale mount:\n%s", embedded.Tail(d.log, 40))
	}
	waitOneBindEach(t, state, mnt, bots, time.Minute)
	// Exactly one mount on mnt itself: the old one went.
	top := 0
	for _, mp := range mountPoints(t, mnt) {
		if mp == filepath.Clean(mnt) {
			top++
		}
	}
	if top != 1 {
		t.Fatalf("%d mounts on %s after the restart, want 1: %v", top, mnt, mountPoints(t, mnt))
	}
	st := statusOf(t, mnt, "k1")
	if st["state"] != "running" || st["pid"] != pid || st["data-path"] != "bind" {
		t.Fatalf("k1 after kill -9 and up: %v (pid was %s)", st, pid)
	}
	// The bot writes; the host sees it through the bind.
	inBot(t, pid, `echo from-the-bot > /data/after-kill9`)
	if b, err := os.ReadFile(filepath.Join(mnt, "k1", "data", "after-kill9")); err != nil || string(b) != "from-the-bot\n" {
		t.Fatalf("the bot's file through the bind: %q %v", b, err)
	}
	sh(t, `echo stop > `+mnt+`/k1/ctl`)
	stopWithin(t, d, time.Minute)
	if left := mountPoints(t, mnt); len(left) > 0 {
		t.Fatalf("mounts left after SIGTERM: %v", left)
	}
}

// TestBindsSIGTERM: SIGTERM of up with binds leaves no mount under the
// mount point: neither the FUSE mount nor any bind.
func TestBindsSIGTERM(t *testing.T) {
	state, mnt := upInstance(t)
	bots := []string{"s1", "s2"}
	d := startUp(t, state, mnt, "--data-binds")
	for _, b := range bots {
		sh(t, `mkdir `+mnt+`/`+b)
	}
	waitOneBindEach(t, state, mnt, bots, time.Minute)
	stopWithin(t, d, time.Minute)
	if left := mountPoints(t, mnt); len(left) > 0 {
		t.Fatalf("mounts left after SIGTERM: %v", left)
	}
	if !strings.Contains(embedded.Tail(d.log, 20), "how=clean") {
		t.Errorf("log does not say the unmount was clean:\n%s", embedded.Tail(d.log, 20))
	}
}

// TestBindsUmount: `memohfs umount` of a live mount with binds detaches
// the binds first and then unmounts the mount, cleanly; up, its
// mount gone, exits. Of a stale mount (up killed with -9) it takes the
// binds with the mount. Either way no mount is left under the mount point.
func TestBindsUmount(t *testing.T) {
	state, mnt := upInstance(t)
	bots := []string{"u1", "u2"}
	d := startUp(t, state, mnt, "--data-binds")
	for _, b := range bots {
		sh(t, `mkdir `+mnt+`/`+b)
	}
	waitOneBindEach(t, state, mnt, bots, time.Minute)
	out, err := exec.Command(binary(t), "umount", mnt).CombinedOutput()
	if err != nil {
		t.Fatalf("memohfs umount: %v\n%s", err, out)
	}
	if want := mnt + ": unmounted\n" + mnt + ": its 2 data/ binds were detached first"; !strings.HasPrefix(string(out), want) {
		t.Errorf("memohfs umount of a live mount with 2 binds said %q, want %q...", out, want)
	}
	if left := mountPoints(t, mnt); len(left) > 0 {
		t.Fatalf("mounts left after memohfs umount: %v", left)
	}
	select {
	case <-d.exited:
	case <-time.After(time.Minute):
		t.Fatalf("memohfs up still runs a minute after its mount went:\n%s", embedded.Tail(d.log, 30))
	}
	if left := mountPoints(t, mnt); len(left) > 0 {
		t.Fatalf("mounts left after up exited: %v", left)
	}

	// Stale: kill -9, then memohfs umount.
	d = startUp(t, state, mnt, "--data-binds")
	waitOneBindEach(t, state, mnt, bots, time.Minute)
	d.cmd.Process.Kill()
	<-d.exited
	if per, _ := bindCounts(t, mnt); per["u1"] != 1 || per["u2"] != 1 {
		t.Fatalf("after kill -9 the binds are not all there (the test proves nothing): %v", mountPoints(t, mnt))
	}
	out, err = exec.Command(binary(t), "umount", mnt).CombinedOutput()
	if err != nil {
		t.Fatalf("memohfs umount of the stale mount: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "connection aborted, mount detached") {
		t.Errorf("memohfs umount of the stale mount said %q", out)
	}
	if left := mountPoints(t, mnt); len(left) > 0 {
		t.Fatalf("mounts left after memohfs umount of the stale mount: %v", left)
	}
}

// TestBindsManyBots: with binds, 1,000 bots: mkdir each (4 at a time),
// `ls` lists them all, each has exactly one bind showing its data dir;
// SIGTERM then takes the mount and every bind away. The timings are
// logged, not asserted. Here (2 cores) it took 35-38 s with a few other
// test runs alongside (mkdir 22 ms each, ls 7-12 ms, SIGTERM to exit
// 0.2-0.3 s), and 76-91 s with six (mkdir 50-65 ms; 45 ms without binds).
func TestBindsManyBots(t *testing.T) {
	const n = 1000
	state, mnt := upInstance(t)
	d := startUp(t, state, mnt, "--data-binds")
	bots := make([]string, n)
	for i := range bots {
		bots[i] = fmt.Sprintf("m%04d", i)
	}
	start := time.Now()
	work := make(chan string)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range work {
				if err := os.Mkdir(filepath.Join(mnt, b), 0o755); err != nil {
					errs <- err
				}
			}
		}()
	}
	for _, b := range bots {
		work <- b
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	mkdirs := time.Since(start)
	t.Logf("mkdir of %d bots, 4 at a time: %s (%s per bot)", n, mkdirs, mkdirs/time.Duration(n))

	start = time.Now()
	waitOneBindEach(t, state, mnt, bots, 5*time.Minute)
	t.Logf("all %d binds in place %s after the last mkdir", n, time.Since(start))

	start = time.Now()
	ents, err := os.ReadDir(mnt)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ls of %d bots: %s", n, time.Since(start))
	if len(ents) != n {
		t.Fatalf("ls lists %d bots, want %d", len(ents), n)
	}
	for i, e := range ents {
		if e.Name() != bots[i] {
			t.Fatalf("ls entry %d is %q, want %q", i, e.Name(), bots[i])
		}
	}
	if st := statusOf(t, mnt, bots[n-1]); st["data-path"] != "bind" {
		t.Fatalf("status of %s: %v", bots[n-1], st)
	}

	took := stopWithin(t, d, 5*time.Minute)
	t.Logf("SIGTERM to exit with %d binds: %s", n, took)
	if left := mountPoints(t, mnt); len(left) > 0 {
		t.Fatalf("%d mounts left after SIGTERM, first %s", len(left), left[0])
	}
	if !strings.Contains(embedded.Tail(d.log, 20), "how=clean") {
		t.Errorf("log does not say the unmount was clean:\n%s", embedded.Tail(d.log, 20))
	}
}
