package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/memohfs/memohfs/internal/embedded"
)

// TestOrphansEnded: the processes a dead run left after its dir was
// removed (a shim whose working dir is its deleted bundle, the
// container's processes under it, which name nothing of the test root,
// one naming an up instance's socket dir) are found and ended by the next
// run's stale cleanup, and the socket dir is removed; a live run's
// processes are left alone.
func TestOrphansEnded(t *testing.T) {
	Get(t)
	id := func() string {
		for {
			var b [3]byte
			rand.Read(b[:])
			if _, err := os.Stat(filepath.Join(Root, hex.EncodeToString(b[:]))); os.IsNotExist(err) {
				return hex.EncodeToString(b[:])
			}
		}
	}
	var b [4]byte
	rand.Read(b[:])
	upRun := filepath.Join(filepath.Dir(mustRunDir("/")), "t"+hex.EncodeToString(b[:]))
	if err := os.MkdirAll(filepath.Join(upRun, "ctrd"), 0o711); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(upRun) })

	start := func(dir string, script string, args ...string) *exec.Cmd {
		t.Helper()
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("/bin/sh", append([]string{"-c", script}, args...)...)
		cmd.Dir = dir
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	// Made under the root lock: another run's stale cleanup must not see
	// them half made.
	unlock, err := lockRoot()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if unlock != nil {
			unlock()
		}
	}()
	// The live run: this process owns it.
	live := filepath.Join(Root, id())
	if err := os.MkdirAll(live, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(live) })
	if err := os.WriteFile(filepath.Join(live, "owner"), []byte(embedded.StampOf(os.Getpid())), 0o644); err != nil {
		t.Fatal(err)
	}
	liveProc := start(filepath.Join(live, "t", "1"), `exec sleep 600`)
	// The dead run: its owner is a process that has exited.
	dead := filepath.Join(Root, id())
	owner := exec.Command("true")
	if err := owner.Run(); err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(dead, "t", "1", "state", "containerd", "state", "task", "c2")
	shim := start(bundle, `(cd / && exec sleep 600) & wait`, "shim", "-address", filepath.Join(upRun, "ctrd", "c.sock"))
	if err := os.WriteFile(filepath.Join(dead, "owner"), []byte(embedded.StampOf(owner.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	// The container's process: a child of the shim, cwd /, nothing of
	// the root in its command line.
	var child embedded.Stamp
	Eventually(t, 10*time.Second, "the shim's child running", func() bool {
		for _, p := range listProcs() {
			if p.ppid == shim.Process.Pid && p.cwd == "/" {
				child = p.stamp
				return true
			}
		}
		return false
	})
	// The dead run's teardown removed its dir while they ran.
	if err := os.RemoveAll(dead); err != nil {
		t.Fatal(err)
	}
	shimStamp, liveStamp := embedded.StampOf(shim.Process.Pid), embedded.StampOf(liveProc.Process.Pid)
	var found []tiedProc
	for _, p := range tiedTo(Root) {
		if runOf(p.anchor) == filepath.Base(dead) {
			found = append(found, p)
		}
	}
	if len(found) != 2 {
		t.Fatalf("processes tied to the dead run: %v, want the shim and its child", found)
	}
	unlock()
	unlock = nil

	cleanStale()

	for name, s := range map[string]embedded.Stamp{"shim": shimStamp, "its child": child} {
		if waitAlive(s, 30*time.Second) {
			t.Errorf("the dead run's %s still runs after the cleanup", name)
		}
	}
	if !liveStamp.Alive() {
		t.Error("the cleanup ended a live run's process")
	}
	if _, err := os.Stat(upRun); !os.IsNotExist(err) {
		t.Errorf("the up instance's socket dir %s is left: %v", upRun, err)
	}
}
