package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/memohfs/memohfs/internal/embedded"
	"github.com/memohfs/memohfs/internal/testenv"
	"github.com/memohfs/memohfs/mount"
	"golang.org/x/sys/unix"
)

// checkBindRounds is how many times each break of a bind is made and
// checked. The daemon mends a bind within 10 s (its check of the binds);
// a round whose check came after the mend missed its window.
const checkBindRounds = 3

// TestCheckBinds: `memohfs check --mount` verifies each bot's data/ bind.
// With `up --data-binds` and two bots it passes. A bind detached under the
// daemon (umount -l) is reported missing until the daemon binds again;
// another dir bound on top of a bot's bind is reported as a second mount
// that shows another dir. The daemon mends a broken bind within 10 s, so
// each break is made checkBindRounds times, counting the rounds whose
// check came first, and the test fails if none did. With binds off
// (status data-path fuse), a dir bound over a bot's data/ is reported.
func TestCheckBinds(t *testing.T) {
	env := testenv.Get(t)
	state, mnt := upInstance(t)
	d := startUp(t, state, mnt, "--data-binds")
	eventually(t, 60*time.Second, "reconcile after up", func() bool { return strings.Contains(readFile(d.log), "msg=reconcile ") })
	bots := []string{"a", "b"}
	for _, b := range bots {
		sh(t, "mkdir "+filepath.Join(mnt, b))
	}
	realMnt := ckRealPath(t, mnt)
	dataDir := func(bot string) string { return filepath.Join(state, "data", "bots", bot) }
	mended := func(bot string) func() bool {
		return func() bool {
			return ckBound(realMnt, bot, dataDir(bot)) && statusOf(t, mnt, bot)["data-path"] == "bind"
		}
	}
	for _, b := range bots {
		eventually(t, 30*time.Second, "bot "+b+"'s data/ bind", mended(b))
	}
	checkOK := func(when string) {
		t.Helper()
		out, err := runCheckBin(t, env, state, mnt)
		if err != nil || !strings.Contains(out, " bots, 0 problems") {
			t.Fatalf("check %s: %v\n%s", when, err, out)
		}
	}
	checkOK("with both binds in place")

	// checkFinds runs check and says whether it reported what it should
	// (a problem line about bot's bind holding each of want); every
	// problem it reports must be about bot's bind.
	checkFinds := func(bot string, want ...[]string) bool {
		t.Helper()
		out, err := runCheckBin(t, env, state, mnt)
		var exit *exec.ExitError
		if err == nil {
			return false
		}
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			t.Fatalf("check: %v\n%s", err, out)
		}
		found := make([]bool, len(want))
		for _, l := range strings.Split(out, "\n") {
			if !strings.HasPrefix(l, "  problem: ") {
				continue
			}
			if !strings.HasPrefix(l, "  problem: bot "+bot+": data/ bind") {
				t.Fatalf("a problem not of bot %s's bind:\n%s", bot, out)
			}
			for i, w := range want {
				all := true
				for _, s := range w {
					all = all && strings.Contains(l, s)
				}
				found[i] = found[i] || all
			}
		}
		for i := range want {
			if !found[i] {
				t.Logf("check failed without the problem %q (the daemon came first?):\n%s", want[i], out)
				return false
			}
		}
		return true
	}
	waitMended := func(bot string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !mended(bot)() {
			if time.Now().After(deadline) {
				ms, _ := mount.Submounts(filepath.Join(realMnt, bot, "data"))
				t.Fatalf("the daemon did not mend bot %s's bind within 60s: status data-path %s, mounts on data/: %+v\n%s",
					bot, statusOf(t, mnt, bot)["data-path"], ms, embedded.Tail(d.log, 20))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	// A detached bind: reported missing, until the daemon binds again.
	hits := 0
	for range checkBindRounds {
		sh(t, "umount -l "+filepath.Join(mnt, "a", "data"))
		if checkFinds("a", []string{"data/ bind is missing", "nothing is mounted on " + filepath.Join(realMnt, "a", "data")}) {
			hits++
		}
		waitMended("a")
	}
	t.Logf("detached bind: check came before the daemon's mend in %d of %d rounds", hits, checkBindRounds)
	if hits == 0 {
		t.Fatal("detached bind: the daemon mended it before every check: the test proved nothing")
	}
	checkOK("after the detached bind was mended")

	// Another dir bound on top of a bind: reported as a second mount
	// showing another dir. A fresh bot each round: the daemon's own mend
	// of a stacked bind is not this test's subject (its detach takes the
	// mount on top and leaves its bind), so the round undoes the stacking
	// itself and waits for check to pass again.
	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, "planted"), []byte("not the bot's\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hits = 0
	for i := range checkBindRounds {
		bot := fmt.Sprintf("s%d", i)
		sh(t, "mkdir "+filepath.Join(mnt, bot))
		waitMended(bot)
		target := filepath.Join(mnt, bot, "data")
		if err := unix.Mount(other, target, "", unix.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(target, "planted")); err != nil {
			t.Fatalf("the other dir is not on top: %v", err)
		}
		if checkFinds(bot, []string{"data/ bind shows another dir", "not the data dir " + dataDir(bot)},
			[]string{"data/ bind: 2 mounts on " + filepath.Join(realMnt, bot, "data")}) {
			hits++
		}
		if err := unix.Unmount(target, 0); err != nil { // the top one
			t.Fatal(err)
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			out, err := runCheckBin(t, env, state, mnt)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("check does not pass again after the stacked bind went: %v\n%s", err, out)
			}
		}
	}
	t.Logf("another dir on top: check came before the daemon's next look in %d of %d rounds", hits, checkBindRounds)
	if hits == 0 {
		t.Fatal("another dir on top: the daemon came before every check: the test proved nothing")
	}

	// A snapshot's views, bound once it is looked up: check passes with
	// them, and finds one made writable; a foreign mount under the mount
	// is a problem of its own.
	sh(t, "echo 'snapshot s1' > "+filepath.Join(mnt, "a", "ctl"))
	views := filepath.Join(mnt, "a", "snapshots", "s1")
	for _, v := range []string{"data", "rootfs"} {
		if _, err := os.Stat(filepath.Join(views, v)); err != nil { // bound once looked up
			t.Fatal(err)
		}
	}
	for _, v := range []string{"data", "rootfs"} {
		eventually(t, 60*time.Second, "the "+v+" view's bind", func() bool {
			ms, _ := mount.Submounts(filepath.Join(realMnt, "a", "snapshots", "s1", v))
			return len(ms) == 1
		})
	}
	checkOK("with the views of a snapshot bound")
	setattr := func(p string, set, clr uint64) {
		t.Helper()
		if err := unix.MountSetattr(unix.AT_FDCWD, p, 0, &unix.MountAttr{Attr_set: set, Attr_clr: clr}); err != nil {
			t.Fatalf("mount_setattr %s: %v", p, err)
		}
	}
	setattr(filepath.Join(views, "data"), 0, unix.MOUNT_ATTR_RDONLY)
	out, err := runCheckBin(t, env, state, mnt)
	want := "problem: bot a: snapshot s1's data/ view on " + filepath.Join(realMnt, "a", "snapshots", "s1", "data") + " lacks ro"
	if err == nil || !strings.Contains(out, want) {
		t.Fatalf("check with a writable view: %v, want %q\n%s", err, want, out)
	}
	setattr(filepath.Join(views, "data"), unix.MOUNT_ATTR_RDONLY, 0)
	checkOK("with the view read-only again")
	if err := unix.Mount(other, filepath.Join(mnt, "a", "skills"), "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	out, err = runCheckBin(t, env, state, mnt)
	want = "problem: a mount memohfs does not make: "
	if err == nil || !strings.Contains(out, want) || !strings.Contains(out, filepath.Join(realMnt, "a", "skills")) {
		t.Fatalf("check with a dir bound on skills/: %v, want %q\n%s", err, want, out)
	}
	if err := unix.Unmount(filepath.Join(mnt, "a", "skills"), 0); err != nil {
		t.Fatal(err)
	}
	checkOK("with skills/ unbound")

	// Binds off: data-path fuse, and a mount on data/ is a problem.
	d.stop()
	d = startUp(t, state, mnt, "--data-binds=false")
	for _, b := range bots {
		if p := statusOf(t, mnt, b)["data-path"]; p != "fuse" {
			t.Fatalf("bot %s with binds off: data-path %q", b, p)
		}
	}
	checkOK("with binds off")
	target := filepath.Join(mnt, "a", "data")
	if err := unix.Mount(other, target, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	out, err = runCheckBin(t, env, state, mnt)
	want = "problem: bot a: data/ bind: status says data-path fuse, but 1 mount(s) on " + filepath.Join(realMnt, "a", "data")
	if err == nil || !strings.Contains(out, want) {
		t.Fatalf("check with a dir bound over a FUSE data/: %v, want %q\n%s", err, want, out)
	}
	if err := unix.Unmount(target, 0); err != nil {
		t.Fatal(err)
	}
	checkOK("with binds off, the mount gone")
	d.stop()
}

// ckRealPath is p with its symlinks resolved, as mountinfo names it.
func ckRealPath(t *testing.T, p string) string {
	t.Helper()
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// ckBound says whether exactly one mount is on mnt/bot/data and it shows
// dataDir.
func ckBound(mnt, bot, dataDir string) bool {
	target := filepath.Join(mnt, bot, "data")
	ms, err := mount.Submounts(target)
	if err != nil || len(ms) != 1 || ms[0].MountPoint != target {
		return false
	}
	var a, b unix.Stat_t
	return unix.Stat(target, &a) == nil && unix.Lstat(dataDir, &b) == nil && a.Dev == b.Dev && a.Ino == b.Ino
}
