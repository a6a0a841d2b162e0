package testenv

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/memohfs/memohfs/internal/embedded"
)

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
			if embedded.StampOf(pid).Alive() {
				out = append(out, fmt.Sprintf("%d: %s", pid, cmd))
			}
		}
	}
	return out
}

// ProcsMentioning lists live processes whose command line names something
// under dir.
func ProcsMentioning(dir string) []string { return procsMentioning(dir) }
