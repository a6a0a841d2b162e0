package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"syscall"
	"testing"
	"time"
)

// Eventually polls cond every 10 ms until it holds, and fails the test
// with what if d passes first.
func Eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ErrLivesOn is what WaitBounded returns for a process that did not end.
var ErrLivesOn = errors.New("lives on")

// WaitBounded waits for c to end, for at most d: then it kills c and
// returns ErrLivesOn, with what /proc said of c's signals just before
// (an ignored SIGINT shows there). A test must fail, not hang.
func WaitBounded(c *exec.Cmd, d time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.Process.Pid))
		sigs := regexp.MustCompile(`(?m)^(SigPnd|SigBlk|SigIgn):.*$`).FindAll(st, -1)
		c.Process.Kill()
		<-done
		return fmt.Errorf("%s %w after %v (%s)", c.Path, ErrLivesOn, d, bytes.Join(sigs, []byte(", ")))
	}
}

// AsUser runs a shell script as uid (gid = uid, no passwd entry needed),
// with $M set to mnt, and returns its combined output.
func AsUser(uid uint32, mnt, script string) (string, error) {
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/bin:/bin", "M=" + mnt, "HOME=/"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// ReadNow reads a memohfs file opened O_NONBLOCK: what it has now, with
// end of file where a blocking reader would wait (events).
func ReadNow(t testing.TB, path string) string {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
