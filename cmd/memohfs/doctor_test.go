package main

import (
	"fmt"
	"os"
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
