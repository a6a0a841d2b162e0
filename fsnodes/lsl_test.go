package fsnodes_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/memohfs/memohfs/fsnodes"
	"golang.org/x/sys/unix"
)

// TestLsLong: what `ls -l` shows of the synthetic tree is what a person
// expects of a filesystem. Files have one link; a dir has 2 plus its
// subdirs, counted from its own listing. No time is 1970: ctl and the bot
// dir carry the bot's creation, status the last state change, events the
// last event, err its last change, a snapshot its taking, a connection
// its making. Sizes are those of what a read gives, where that is known.
// data/ is the host dir: its link count is the host's.
func TestLsLong(t *testing.T) {
	s := newStack(t, fsnodes.Options{})
	before := time.Now()
	if err := os.Mkdir(s.Path("ll"), 0o755); err != nil {
		t.Fatal(err)
	}
	made := time.Now()

	// Every entry of the bot dir.
	for _, name := range []string{"ctl", "status", "err", "events", "log"} {
		st := lstat(t, s.Path("ll", name))
		if st.Nlink != 1 {
			t.Errorf("%s: %d links, want 1", name, st.Nlink)
		}
		if st.Mtim.Sec == 0 {
			t.Errorf("%s: mtime 1970", name)
		}
	}
	linksMatchListing(t, s.Path())
	linksMatchListing(t, s.Path("ll"))
	linksMatchListing(t, s.Path("ll", "snapshots"))
	linksMatchListing(t, s.Path("ll", "cmd"))
	inWindow(t, "bot dir", lstat(t, s.Path("ll")), before, made)
	inWindow(t, "ctl", lstat(t, s.Path("ll", "ctl")), before, made)
	inWindow(t, "status (made)", lstat(t, s.Path("ll", "status")), before, made)
	for _, name := range []string{"ctl", "status", "err"} {
		sizeIsContent(t, s.Path("ll", name))
	}
	// data/ against the host dir it shows (ext4 here): a subdir adds a
	// link on both.
	if err := os.Mkdir(filepath.Join(s.HostData("ll"), "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "data/ link count is the host's", func() bool {
		return lstat(t, s.Path("ll", "data")).Nlink == lstat(t, s.HostData("ll")).Nlink
	})

	// A state change moves status; its events move events.
	beforeStart := time.Now()
	s.MustCtl("ll", "start")
	started := time.Now()
	inWindow(t, "status (started)", lstat(t, s.Path("ll", "status")), beforeStart, started)
	inWindow(t, "events (started)", lstat(t, s.Path("ll", "events")), beforeStart, started)
	inWindow(t, "ctl (still the bot's creation)", lstat(t, s.Path("ll", "ctl")), before, made)
	sizeIsContent(t, s.Path("ll", "status"))

	// A failure moves err, and gives it its size.
	beforeBad := time.Now()
	if err := s.Ctl("ll", "frobnicate"); err == nil {
		t.Fatal("a bad verb was taken")
	}
	inWindow(t, "err (failed)", lstat(t, s.Path("ll", "err")), beforeBad, time.Now())
	if st := lstat(t, s.Path("ll", "err")); st.Size == 0 {
		t.Error("err: size 0 after a failure")
	}
	sizeIsContent(t, s.Path("ll", "err"))

	// A snapshot: snapshots/ gains a link, the snapshot dir has its two
	// views and the time it was taken.
	beforeSnap := time.Now()
	s.MustCtl("ll", "snapshot s1")
	snapped := time.Now()
	eventually(t, 10*time.Second, "snapshots/ counts s1", func() bool {
		return lstat(t, s.Path("ll", "snapshots")).Nlink == 3
	})
	linksMatchListing(t, s.Path("ll", "snapshots"))
	linksMatchListing(t, s.Path("ll", "snapshots", "s1"))
	inWindow(t, "snapshots/s1", lstat(t, s.Path("ll", "snapshots", "s1")), beforeSnap, snapped)
	inWindow(t, "snapshots/s1/info", lstat(t, s.Path("ll", "snapshots", "s1", "info")), beforeSnap, snapped)
	sizeIsContent(t, s.Path("ll", "snapshots", "s1", "info"))

	// A connection: cmd/ gains a link while it lives.
	beforeClone := time.Now()
	clone, err := os.OpenFile(s.Path("ll", "cmd", "clone"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer clone.Close()
	buf := make([]byte, 32)
	n, err := clone.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	conn := strings.TrimSpace(string(buf[:n]))
	cloned := time.Now()
	if st := lstat(t, s.Path("ll", "cmd")); st.Nlink != 3 {
		t.Errorf("cmd/ with one connection: %d links, want 3", st.Nlink)
	}
	linksMatchListing(t, s.Path("ll", "cmd"))
	inWindow(t, "cmd/"+conn, lstat(t, s.Path("ll", "cmd", conn)), beforeClone, cloned)
	for _, f := range []string{"ctl", "data", "stderr", "wait", "status"} {
		st := lstat(t, s.Path("ll", "cmd", conn, f))
		if st.Nlink != 1 {
			t.Errorf("cmd/%s/%s: %d links, want 1", conn, f, st.Nlink)
		}
		inWindow(t, "cmd/"+conn+"/"+f, st, beforeClone, cloned)
	}

	// /M counts its bots.
	if err := os.Mkdir(s.Path("ll2"), 0o755); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "/M counts two bots", func() bool { return lstat(t, s.Path()).Nlink == 4 })
	linksMatchListing(t, s.Path())

	// ls itself: no entry of the bot dir shows 0 links or 1970.
	out := s.MustSh("ls -ln --time-style=+%Y " + s.Path("ll"))
	for _, l := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
		f := strings.Fields(l)
		if len(f) < 7 || f[1] == "0" || f[5] == "1970" {
			t.Errorf("ls -l shows %q", l)
		}
	}
	s.MustCtl("ll", "stop 1")
}

func lstat(t *testing.T, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// linksMatchListing: dir's link count is 2 plus the dirs it lists, as on
// a local filesystem (find and rsync rely on it).
func linksMatchListing(t *testing.T, dir string) {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	subdirs := 0
	for _, e := range es {
		if e.IsDir() {
			subdirs++
		}
	}
	if st := lstat(t, dir); int(st.Nlink) != 2+subdirs {
		t.Errorf("%s: %d links, but it lists %d dirs (want %d)", dir, st.Nlink, subdirs, 2+subdirs)
	}
}

// inWindow: st's mtime is within [from, to], to the microsecond (the
// kernel shows the nanoseconds it is given; times from Postgres are
// stored to the microsecond). Every window here is disjoint from the one
// before it, so a time that did not move fails.
func inWindow(t *testing.T, what string, st unix.Stat_t, from, to time.Time) {
	t.Helper()
	m := time.Unix(st.Mtim.Sec, st.Mtim.Nsec)
	if m.Before(from.Truncate(time.Microsecond)) || m.After(to) {
		t.Errorf("%s: mtime %s, want between %s and %s", what, m.Format(time.RFC3339Nano), from.Format(time.RFC3339Nano), to.Format(time.RFC3339Nano))
	}
}

// sizeIsContent: stat's size is the length of what a read gives.
func sizeIsContent(t *testing.T, p string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if st := lstat(t, p); st.Size != int64(len(b)) {
		t.Errorf("%s: size %d, a read gives %d bytes", p, st.Size, len(b))
	}
}
