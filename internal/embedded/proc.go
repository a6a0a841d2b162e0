package embedded

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// procStart is field 22 of /proc/<pid>/stat: the process's start time in
// clock ticks since boot. With the pid it names one process for good.
func procStart(pid int) (string, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", false
	}
	fields := strings.Fields(s[i+1:])
	if len(fields) < 20 || fields[0] == "Z" {
		return "", false
	}
	return fields[19], true
}

// Stamp names one process: "<pid> <start time>".
type Stamp string

// StampOf stamps a running process.
func StampOf(pid int) Stamp {
	st, _ := procStart(pid)
	return Stamp(fmt.Sprintf("%d %s", pid, st))
}

// Pid is the stamped process's pid and whether it still runs.
func (s Stamp) Pid() (int, bool) {
	f := strings.Fields(string(s))
	if len(f) != 2 {
		return 0, false
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil || pid <= 0 {
		return 0, false
	}
	st, ok := procStart(pid)
	return pid, ok && st == f[1]
}

// Alive reports whether the stamped process still runs.
func (s Stamp) Alive() bool { _, ok := s.Pid(); return ok }

// ReadStamp reads a pid file.
func ReadStamp(path string) Stamp {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return Stamp(strings.TrimSpace(string(b)))
}

func writeStamp(path string, s Stamp) error {
	return os.WriteFile(path, []byte(string(s)+"\n"), 0o644)
}

// Terminate ends the stamped process: sig, up to grace, then SIGKILL. The
// stamp is checked before every signal.
func (s Stamp) Terminate(sig syscall.Signal, grace time.Duration) error {
	pid, ok := s.Pid()
	if !ok {
		return nil
	}
	if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	if s.waitGone(grace) {
		return nil
	}
	if pid, ok := s.Pid(); ok {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	if !s.waitGone(10 * time.Second) {
		return fmt.Errorf("pid %d survived SIGKILL", pid)
	}
	return nil
}

func (s Stamp) waitGone(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !s.Alive() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return !s.Alive()
}

// waitFor polls cond until it returns nil or timeout passes.
func waitFor(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	delay := 5 * time.Millisecond
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(delay)
		if delay < 100*time.Millisecond {
			delay *= 2
		}
	}
}

// Tail returns the last n lines of a log file, for error messages.
func Tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// RunDir is the short directory (unix socket paths are limited to 108
// bytes) where a memohfs whose state is in stateDir keeps its daemons'
// sockets: /run/memohfs/<8 hex of the state dir's path>.
func RunDir(stateDir string) (string, error) {
	abs, err := filepath.Abs(stateDir)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(abs))
	return filepath.Join("/run/memohfs", hex.EncodeToString(sum[:4])), nil
}
