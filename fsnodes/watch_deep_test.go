package fsnodes_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/memohfs/memohfs/fsnodes"
)

// TestWatchBeyondLimitsServedFresh: where the watcher does not watch a
// bot's data dir (here: deeper than its depth limit, 128), data/ is not
// cached, so a change made behind the mount there is seen by the very
// next stat, not after the hour-long TTL; where it watches, the change
// is pushed (the usual path).
func TestWatchBeyondLimitsServedFresh(t *testing.T) {
	s := newStack(t, fsnodes.Options{})
	must(t, os.Mkdir(s.Path("deep"), 0o755))
	host := filepath.Join(s.Root, "bots", "deep")
	rel := strings.TrimSuffix(strings.Repeat("d/", 130), "/") // deepest dir at depth 130
	must(t, os.MkdirAll(filepath.Join(host, rel), 0o755))
	must(t, os.WriteFile(filepath.Join(host, rel, "f"), []byte("one"), 0o644))
	must(t, os.WriteFile(filepath.Join(host, "top"), []byte("one"), 0o644))

	size := func(p string) int64 {
		t.Helper()
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("stat %s: %v", p, err)
		}
		return fi.Size()
	}
	deep := s.Path("deep", "data", rel)
	// Twice: the second would be served from the kernel's cache if it
	// kept one.
	for range 2 {
		if n := size(filepath.Join(deep, "f")); n != 3 {
			t.Fatalf("size through data/: %d, want 3", n)
		}
		if _, err := os.Stat(filepath.Join(deep, "g")); !errnoIs(err, syscall.ENOENT) {
			t.Fatalf("stat of a missing name: %v", err)
		}
	}
	if n := size(s.Path("deep", "data", "top")); n != 3 {
		t.Fatalf("size of top: %d", n)
	}

	must(t, os.WriteFile(filepath.Join(host, rel, "f"), []byte("longer"), 0o644))
	must(t, os.WriteFile(filepath.Join(host, rel, "g"), nil, 0o644))
	must(t, os.WriteFile(filepath.Join(host, "top"), []byte("longer"), 0o644))
	if n := size(filepath.Join(deep, "f")); n != 6 {
		t.Errorf("beyond the depth limit, a stat right after the bot's write: size %d, want 6", n)
	}
	if _, err := os.Stat(filepath.Join(deep, "g")); err != nil {
		t.Errorf("beyond the depth limit, a stat right after the bot made g: %v", err)
	}
	eventually(t, 10*time.Second, "top's new size pushed", func() bool { return size(s.Path("deep", "data", "top")) == 6 })
}
