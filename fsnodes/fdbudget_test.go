package fsnodes_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/memohfs/memohfs/fsnodes"
)

// TestFdBudget: after 100,000 files of a bot's data/ were looked up (and
// the kernel keeps every one of their nodes), memohfs holds no more fds
// on the bot's data dir than its budget; every file still answers,
// through the node the kernel has, with its own content (found again by
// file handle), and a file the bot replaced at the same name since shows
// the new file, never the old one's handle.
//
//	$ find /memoh/b/data -type f | xargs stat >/dev/null
//	$ ls -l /proc/$(pidof memohfs)/fd | grep -c /bots/b/     # at most DataFds
func TestFdBudget(t *testing.T) {
	const (
		dirs, perDir = 100, 1000 // 100k files
		budget       = 1024
	)
	// The FUSE path's own budget: binds off (with a bind the kernel
	// serves data/ and memohfs holds no fds for it).
	s := newStackOn(t, fsnodes.Options{AllowOther: true, DataFds: budget})
	s.MustSh(`mkdir $M/fd`)
	host := filepath.Join(s.Root, "bots", "fd")
	for d := range dirs {
		dir := filepath.Join(host, fmt.Sprintf("d%03d", d))
		must(t, os.Mkdir(dir, 0o755))
		for f := range perDir {
			must(t, os.WriteFile(filepath.Join(dir, fmt.Sprint(f)), []byte(fmt.Sprintf("%d/%d\n", d, f)), 0o644))
		}
	}
	before := hostFds(t, host)
	peak := 0
	for d := range dirs {
		dir := s.Path("fd", "data", fmt.Sprintf("d%03d", d))
		for f := range perDir {
			var st syscall.Stat_t
			if err := syscall.Lstat(filepath.Join(dir, fmt.Sprint(f)), &st); err != nil {
				t.Fatalf("stat d%03d/%d: %v", d, f, err)
			}
		}
		peak = max(peak, hostFds(t, host))
	}
	after := hostFds(t, host)
	t.Logf("fds on the bot's data dir: %d before, %d after %d files were looked up (peak %d after a dir; budget %d)",
		before, after, dirs*perDir, peak, budget)
	// The budget; the tree's base (O_PATH and the read fd handles are
	// opened from); the watcher's fds (at most 4); and lookups that land
	// while one eviction pass runs (the others do not wait for it), at
	// most one per request go-fuse serves at once.
	if limit := budget + 2 + 4 + 32; peak > limit {
		t.Errorf("memohfs held %d fds on the data dir, more than the budget's %d", peak, limit)
	}
	if peak < budget/2 {
		t.Errorf("only %d fds held at the peak: the lookups did not reach the budget (the test is void)", peak)
	}

	// Every file answers through the kernel's node, mostly evicted ones.
	for d := 0; d < dirs; d += 7 {
		for f := 0; f < perDir; f += 13 {
			p := s.Path("fd", "data", fmt.Sprintf("d%03d", d), fmt.Sprint(f))
			b, err := os.ReadFile(p)
			if want := fmt.Sprintf("%d/%d\n", d, f); err != nil || string(b) != want {
				t.Fatalf("read %s: %q, %v; want %q", p, b, err, want)
			}
			if err := os.Chmod(p, 0o600); err != nil {
				t.Fatalf("chmod %s: %v", p, err)
			}
		}
	}
	if n := hostFds(t, host); n > budget+2+4+32 {
		t.Errorf("%d fds held after the files were used again", n)
	}

	// The bot replaces files at their names; the names show the new files.
	for f := range 50 {
		h := filepath.Join(host, "d000", fmt.Sprint(f))
		must(t, os.Remove(h))
		must(t, os.WriteFile(h, []byte("new\n"), 0o644))
	}
	for f := range 50 {
		p := s.Path("fd", "data", "d000", fmt.Sprint(f))
		eventually(t, time.Minute, "the new file at "+p, func() bool {
			b, err := os.ReadFile(p)
			return err == nil && string(b) == "new\n"
		})
	}
	// A file deleted by the bot is gone, not found by its old handle.
	h := filepath.Join(host, "d001", "5")
	must(t, os.Remove(h))
	eventually(t, time.Minute, "d001/5 gone", func() bool {
		_, err := os.Stat(s.Path("fd", "data", "d001", "5"))
		return errors.Is(err, syscall.ENOENT)
	})
}

// hostFds counts this process's (memohfs's) fds open on dir or below.
func hostFds(t *testing.T, dir string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err == nil && (target == dir || strings.HasPrefix(target, dir+"/")) {
			n++
		}
	}
	return n
}
