package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/memohfs/memohfs/internal/daemon"
	"github.com/memohfs/memohfs/internal/embedded"
	"github.com/memohfs/memohfs/internal/testenv"
	"github.com/memohfs/memohfs/mount"
)

// TestUp: the built binary serves a whole machine's memohfs, stops
// cleanly on SIGTERM (mount gone, every process it started gone), and a
// second `up` on the same state dir finds everything as it was.
func TestUp(t *testing.T) {
	state, mnt := upInstance(t)
	d := startUp(t, state, mnt)
	sh(t, `M=`+mnt+`; mkdir $M/b && echo start > $M/b/ctl`)
	st := statusOf(t, mnt, "b")
	if st["state"] != "running" || st["pid"] == "-" || st["ip"] == "-" {
		t.Fatalf("status: %v", st)
	}
	sh(t, `M=`+mnt+`; echo hello > $M/b/data/x && echo 'snapshot s1' > $M/b/ctl && echo stop > $M/b/ctl`)
	started := []embedded.Stamp{
		embedded.ReadStamp(filepath.Join(state, "containerd", "containerd.pid")),
		embedded.ReadStamp(filepath.Join(state, "postgres", "postgres.pid")),
	}
	for _, s := range started {
		if !s.Alive() {
			t.Fatalf("%q not running before the stop: the test proves nothing", s)
		}
	}
	d.stop()
	if st, _ := mount.Check(mnt); st != mount.NotMounted {
		t.Fatalf("after SIGTERM the mount is %s", st)
	}
	for _, s := range started {
		if s.Alive() {
			t.Errorf("%q still runs after up exited", s)
		}
	}
	if left := upLeft(t, state); len(left) > 0 {
		t.Errorf("processes of up still run: %v", left)
	}
	if !strings.Contains(embedded.Tail(d.log, 10), "how=clean") {
		t.Errorf("log does not say the unmount was clean:\n%s", embedded.Tail(d.log, 10))
	}

	// Again, on the same state.
	d = startUp(t, state, mnt)
	if ls := sh(t, `ls `+mnt); ls != "b\n" {
		t.Fatalf("bots after a restart: %q", ls)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "b", "data", "x")); err != nil || string(b) != "hello\n" {
		t.Fatalf("data after a restart: %q %v", b, err)
	}
	if ls := sh(t, `ls `+mnt+`/b/snapshots`); ls != "s1\n" {
		t.Fatalf("snapshots after a restart: %q", ls)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "b", "snapshots", "s1", "data", "x")); err != nil || string(b) != "hello\n" {
		t.Fatalf("snapshot data after a restart: %q %v", b, err)
	}
	if st := statusOf(t, mnt, "b"); st["state"] != "stopped" || st["snapshots"] != "1" {
		t.Fatalf("status after a restart: %v", st)
	}
	// SIGHUP reloads what it can, and keeps serving.
	d.cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, time.Minute, "reload logged", func() bool { return strings.Contains(embedded.Tail(d.log, 5), "reload") })
	if st := statusOf(t, mnt, "b"); st["state"] != "stopped" {
		t.Fatalf("status after SIGHUP: %v", st)
	}
	d.stop()

	// With --stop-bots-on-exit a running bot is stopped on the way out.
	d = startUp(t, state, mnt, "--stop-bots-on-exit")
	sh(t, `echo start > `+mnt+`/b/ctl`)
	d.stop()
	if left := upLeft(t, state); len(left) > 0 {
		t.Errorf("processes left after --stop-bots-on-exit: %v", left)
	}
	d = startUp(t, state, mnt)
	if st := statusOf(t, mnt, "b"); st["state"] != "stopped" || st["exit"] != "0" {
		t.Fatalf("status after --stop-bots-on-exit: %v", st)
	}
	d.stop()
}

// eventually is testenv.Eventually.
var eventually = testenv.Eventually

// TestUpKill9: after kill -9 of memohfs the next start clears the stale
// mount and serves again; a bot that ran still runs and shows so.
func TestUpKill9(t *testing.T) {
	state, mnt := upInstance(t)
	d := startUp(t, state, mnt)
	sh(t, `M=`+mnt+`; mkdir $M/k && echo start > $M/k/ctl`)
	pid := statusOf(t, mnt, "k")["pid"]
	d.cmd.Process.Kill()
	<-d.exited
	if st, _ := mount.Check(mnt); st != mount.Stale {
		t.Fatalf("after kill -9 the mount is %s, want stale", st)
	}
	start := time.Now()
	d = startUp(t, state, mnt)
	t.Logf("serving again %s after the restart began (containerd and postgres adopted)", time.Since(start))
	if !strings.Contains(embedded.Tail(d.log, 40), "replaced a stale mount") {
		t.Errorf("log does not mention the stale mount:\n%s", embedded.Tail(d.log, 40))
	}
	st := statusOf(t, mnt, "k")
	if st["state"] != "running" || st["pid"] != pid {
		t.Fatalf("the bot after kill -9 of memohfs: %v (pid was %s)", st, pid)
	}
	sh(t, `echo stop > `+mnt+`/k/ctl`)
	d.stop()
}

// TestDoctor: passes here; fails, saying why and how to fix it, when runc
// is not in PATH.
func TestDoctor(t *testing.T) {
	bin := binary(t)
	out, err := runBin(bin, os.Environ(), "doctor")
	if err != nil {
		t.Fatalf("doctor on the test machine: %v\n%s", err, out)
	}
	env := []string{"PATH=/nonexistent"}
	out, err = runBin(bin, env, "doctor")
	if err == nil {
		t.Fatalf("doctor without runc in PATH passed:\n%s", out)
	}
	var line string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "runc ") {
			line = l
		}
	}
	if !strings.Contains(line, "FAIL") || !strings.Contains(line, "not in PATH") || !strings.Contains(line, "apt-get install runc") {
		t.Fatalf("doctor's runc line: %q\n%s", line, out)
	}
	if ee, ok := err.(interface{ ExitCode() int }); !ok || ee.ExitCode() != 1 {
		t.Fatalf("doctor's exit: %v", err)
	}
}

func runBin(bin string, env []string, args ...string) (string, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestUpSignalWhileStarting: SIGTERM while up is still starting (its
// Postgres and containerd coming up, the mount not yet served) is kept
// and acted on once it serves: a clean exit, the mount gone, nothing it
// started left running. Without catching signals from the start, the
// default action killed it and left the mount behind. The signal is sent
// once up has reached a step (its Postgres running, then its containerd
// running), not after a time a loaded machine could stretch; a round in
// which the mount was already served when the step was seen missed its
// window and fails.
func TestUpSignalWhileStarting(t *testing.T) {
	state, mnt := upInstance(t)
	env := testenv.Get(t)
	bin, err := testenv.ContainerdBinDir()
	if err != nil {
		t.Fatal(err)
	}
	running := func(pidFile string) func() bool {
		return func() bool { return embedded.ReadStamp(filepath.Join(state, pidFile)).Alive() }
	}
	for i, step := range []struct {
		what    string
		reached func() bool
	}{
		{"its Postgres running", running("postgres/postgres.pid")},
		{"its containerd running", running("containerd/containerd.pid")},
	} {
		var out bytes.Buffer
		cmd := exec.Command(binary(t), "up", "--mount", mnt, "--state-dir", state, "--containerd-bin", bin,
			"--bridge", env.Net.Bridge, "--subnet", env.Net.Subnet)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		exited := false
		eventually(t, 3*time.Minute, fmt.Sprintf("round %d: %s", i, step.what), func() bool {
			select {
			case err := <-done:
				done <- err
				exited = true
				return true
			default:
			}
			return step.reached()
		})
		if exited {
			t.Fatalf("round %d: up exited before %s:\n%s", i, step.what, out.String())
		}
		if st, _ := mount.Check(mnt); st != mount.NotMounted {
			cmd.Process.Signal(syscall.SIGTERM)
			<-done
			t.Fatalf("round %d: the mount was %s already when %s was seen: the signal would not land while up starts", i, st, step.what)
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("round %d: SIGTERM with %s: %v\n%s", i, step.what, err, out.String())
			}
		case <-time.After(3 * time.Minute):
			cmd.Process.Kill()
			t.Fatalf("round %d: up did not exit after SIGTERM:\n%s", i, out.String())
		}
		if st, _ := mount.Check(mnt); st != mount.NotMounted {
			t.Fatalf("round %d: mount left: %v", i, st)
		}
		if left := upLeft(t, state); len(left) > 0 {
			t.Fatalf("round %d: processes left: %v", i, left)
		}
	}
}

// upLeft lists the processes tied to an up instance (its state dir or
// socket dir: daemons, shims by their bundle, their descendants).
func upLeft(t *testing.T, state string) []string {
	t.Helper()
	l, err := daemon.NewLayout(state)
	if err != nil {
		t.Fatal(err)
	}
	return testenv.ProcsTiedTo(l.State, l.Run)
}
