package fsnodes_test

import (
	"fmt"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/memohfs/memohfs/fsnodes"
)

// TestRootListing: a listing of /M opened before a bot came or went and
// read after memohfs dropped the kernel's cached listing must not put the
// old listing back into that cache. It did: the handle's listing was
// taken at opendir, the kernel cached what the handle read, and every
// ls /M after showed a deleted bot (and hid a new one) until the next
// bot came or went. (TestCrash found it: its restart's ReadDir ran
// across an rmdir.)
//
// No race is hoped for: the handle is opened before the change and read
// only once /M's mtime shows that the change's drop reached the kernel
// (it invalidates /M's attributes and its listing together), so every
// round opens the window. With the listing taken at opendir only, round
// 0 fails at its mkdir.
func TestRootListing(t *testing.T) {
	s := newStack(t, fsnodes.Options{})
	s.Mkbot("keep")
	mtime := func() syscall.Timespec {
		var st syscall.Stat_t
		if err := syscall.Stat(s.Mnt, &st); err != nil {
			t.Fatal(err)
		}
		return st.Mtim
	}
	list := func() []string {
		names, err := os.ReadDir(s.Mnt)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range names {
			out = append(out, e.Name())
		}
		return out
	}
	// change does op with /M open, waits for its drop, then reads the
	// open handle (it fills the kernel's cache) and lists /M afresh.
	change := func(op func() error) (handle, fresh []string) {
		t.Helper()
		list() // the cache holds the listing before the change
		before := mtime()
		f, err := os.Open(s.Mnt)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := op(); err != nil {
			t.Fatal(err)
		}
		eventually(t, time.Minute, "/M's mtime moves with the change", func() bool { return mtime() != before })
		handle, err = f.Readdirnames(-1)
		if err != nil {
			t.Fatal(err)
		}
		return handle, list()
	}
	for i := range 10 {
		bot := fmt.Sprintf("r%d", i)
		_, fresh := change(func() error { return os.Mkdir(s.Path(bot), 0o755) })
		if !slices.Contains(fresh, bot) {
			t.Fatalf("round %d: ls /M after mkdir %s: %v", i, bot, fresh)
		}
		handle, fresh := change(func() error { return os.Remove(s.Path(bot)) })
		if slices.Contains(fresh, bot) {
			t.Fatalf("round %d: ls /M after rmdir %s still lists it: %v (the handle opened before read %v)", i, bot, fresh, handle)
		}
		if !slices.Contains(fresh, "keep") {
			t.Fatalf("round %d: ls /M lost keep: %v", i, fresh)
		}
	}
}
