package testenv

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// procStart returns the start time of pid in clock ticks since boot (field
// 22 of /proc/<pid>/stat): with the pid it names one process for good, so a
// recycled pid is never mistaken for ours.
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
	if len(fields) < 20 {
		return "", false
	}
	if fields[0] == "Z" {
		return "", false // a zombie is as good as gone
	}
	return fields[19], true
}

func ownerStamp(pid int) string {
	st, _ := procStart(pid)
	return fmt.Sprintf("%d %s\n", pid, st)
}

// stampAlive reports whether the process a stamp names still runs.
func stampAlive(stamp string) (int, bool) {
	f := strings.Fields(stamp)
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

func readStamp(path string) (int, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	return stampAlive(string(b))
}

// terminate ends a process we started: sig, then SIGKILL after grace. It
// checks the stamp before each signal so it never hits a recycled pid.
func terminate(stamp string, sig syscall.Signal, grace time.Duration) error {
	pid, ok := stampAlive(stamp)
	if !ok {
		return nil
	}
	if err := syscall.Kill(pid, sig); err != nil && err != syscall.ESRCH {
		return err
	}
	if waitGone(stamp, grace) {
		return nil
	}
	if _, ok := stampAlive(stamp); ok {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	if !waitGone(stamp, 10*time.Second) {
		return fmt.Errorf("pid %d survived SIGKILL", pid)
	}
	return nil
}

func waitGone(stamp string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if _, ok := stampAlive(stamp); !ok {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, ok := stampAlive(stamp)
	return !ok
}

// procsMentioning lists processes whose command line names something under
// dir: daemons, shims and postmasters of a run all do.
func procsMentioning(dir string) []string {
	entries, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || len(b) == 0 {
			continue
		}
		cmd := strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " ")
		if strings.Contains(cmd, dir+"/") {
			if _, ok := procStart(pid); ok {
				out = append(out, fmt.Sprintf("%d: %s", pid, cmd))
			}
		}
	}
	return out
}
