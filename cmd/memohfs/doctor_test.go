package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/memohfs/memohfs/fsnodes"
)

// TestDoctorInotify: doctor reports root's inotify limits against the
// bots the host is to serve (one instance and up to WatchesPerBot
// watches each), ok when they suffice, and a warning (not a failure: the
// bots' data/ stays right, only slower) with the sysctl that fixes it
// when they do not.
func TestDoctorInotify(t *testing.T) {
	bin := binary(t)
	limit := func(key string) int {
		b, err := os.ReadFile("/proc/sys/fs/inotify/" + key)
		if err != nil {
			t.Fatal(err)
		}
		v, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	watches, instances := limit("max_user_watches"), limit("max_user_instances")
	row := func(out, name string) string {
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "inotify "+name+" ") {
				return l
			}
		}
		t.Fatalf("no inotify %s row:\n%s", name, out)
		return ""
	}
	for _, bots := range []int{1, watches/fsnodes.WatchesPerBot + 1, instances} {
		out, err := runBin(bin, os.Environ(), "doctor", "--bots", strconv.Itoa(bots))
		if err != nil {
			t.Fatalf("doctor --bots %d: %v\n%s", bots, err, out)
		}
		needW := bots*fsnodes.WatchesPerBot + 8192
		needI := bots + 64
		for _, c := range []struct {
			name, key string
			cur, need int
		}{{"watches", "max_user_watches", watches, needW}, {"instances", "max_user_instances", instances, needI}} {
			l := row(out, c.name)
			if !strings.Contains(l, fmt.Sprintf("%s=%d; %d bots need %d", c.key, c.cur, bots, c.need)) {
				t.Errorf("--bots %d: %s row does not say the limit and the need: %q", bots, c.name, l)
			}
			fix := fmt.Sprintf("sysctl -w fs.inotify.%s=%d", c.key, c.need)
			if c.cur >= c.need {
				if !strings.Contains(l, " ok ") || strings.Contains(l, "sysctl") {
					t.Errorf("--bots %d: %s suffice (%d >= %d) but: %q", bots, c.name, c.cur, c.need, l)
				}
			} else if !strings.Contains(l, " warn ") || !strings.Contains(l, fix) {
				t.Errorf("--bots %d: %s too low (%d < %d), want warn and %q: %q", bots, c.name, c.cur, c.need, fix, l)
			}
		}
	}
}

// TestDoctorBinds: doctor's data/ binds row is ok on this machine (root,
// Linux with open_tree), and, run without CAP_SYS_ADMIN (setpriv drops it
// from root), warns that data/ goes through FUSE, says why, and gives the
// fix; a warning, not a failure: data/ is still served.
func TestDoctorBinds(t *testing.T) {
	bin := binary(t)
	row := func(out string) string {
		t.Helper()
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "data/ binds ") {
				return l
			}
		}
		t.Fatalf("no data/ binds row:\n%s", out)
		return ""
	}
	out, err := runBin(bin, os.Environ(), "doctor")
	if err != nil {
		t.Fatalf("doctor: %v\n%s", err, out)
	}
	if l := row(out); !strings.Contains(l, " ok ") || !strings.Contains(l, "open_tree works") || strings.Contains(l, "run memohfs as root") {
		t.Fatalf("doctor as root: %q, want ok", l)
	}

	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatal("setpriv (util-linux) is needed to run doctor without CAP_SYS_ADMIN")
	}
	cmd := exec.Command(setpriv, "--inh-caps", "-sys_admin", "--bounding-set", "-sys_admin", bin, "doctor")
	b, _ := cmd.CombinedOutput() // its exit is the other rows' business
	l := row(string(b))
	for _, want := range []string{" warn ", "FUSE only", "CAP_SYS_ADMIN", "run memohfs as root", "data/ goes through FUSE"} {
		if !strings.Contains(l, want) {
			t.Errorf("doctor without CAP_SYS_ADMIN: %q lacks %q", l, want)
		}
	}
	if strings.Contains(l, "FAIL") {
		t.Errorf("doctor without CAP_SYS_ADMIN fails on binds: %q", l)
	}
}
