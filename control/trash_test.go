package control_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/memohfs/memohfs/control"
	"github.com/memohfs/memohfs/internal/testenv"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// counter reads a counter (or the sum of a counter vector) from reg.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue()
			}
		}
	}
	return v
}

// deleteWithLink makes bot, puts a file and a link to victim (a host file
// outside the data root) in its data dir, and deletes it: its data goes
// to the trash. It returns the trash entry.
func deleteWithLink(r *rig, bot, victim string) string {
	r.t.Helper()
	ctx := r.t.Context()
	if err := r.c.Create(ctx, bot, 0); err != nil {
		r.t.Fatal(err)
	}
	dir := r.c.DataDir(bot)
	if err := os.WriteFile(filepath.Join(dir, "f"), make([]byte, 64<<10), 0o644); err != nil {
		r.t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(dir, "link")); err != nil {
		r.t.Fatal(err)
	}
	if err := os.Symlink(filepath.Dir(victim), filepath.Join(dir, "dirlink")); err != nil {
		r.t.Fatal(err)
	}
	before, _ := filepath.Glob(filepath.Join(control.TrashDir(r.opts.DataRoot), bot+"-*"))
	if err := r.c.Delete(ctx, bot); err != nil {
		r.t.Fatal(err)
	}
	after, _ := filepath.Glob(filepath.Join(control.TrashDir(r.opts.DataRoot), bot+"-*"))
	if len(after) != len(before)+1 {
		r.t.Fatalf("delete of %s made no trash entry: %v", bot, after)
	}
	return after[len(after)-1]
}

// TestTrashKeep: the trash keeps an entry for --trash-keep, measured from
// when it went to the trash, then removes it, counted, without following
// the links a bot left in its data. MeasureTrash (memohfs check) sees the
// entries and their bytes.
func TestTrashKeep(t *testing.T) {
	victimDir := t.TempDir()
	victim := filepath.Join(victimDir, "host-file")
	if err := os.WriteFile(victim, []byte("the host's"), 0o644); err != nil {
		t.Fatal(err)
	}

	t.Run("age", func(t *testing.T) {
		r := newRig(t)
		reg := prometheus.NewRegistry()
		r.opts.TrashKeep = time.Hour
		r.opts.Metrics = reg
		r.restart()
		older := deleteWithLink(r, "older", victim)
		newer := deleteWithLink(r, "newer", victim)
		made := func(p string) time.Time {
			var st unixStat
			statCtime(t, p, &st)
			return st.ctime
		}
		if !made(newer).After(made(older)) {
			t.Fatalf("two deletes in a row made entries with the same ctime: %s", made(older))
		}
		u, err := control.MeasureTrash(r.opts.DataRoot)
		if err != nil {
			t.Fatal(err)
		}
		if u.Entries != 2 || u.Bytes < 2*64<<10 || !u.Oldest.Equal(made(older)) {
			t.Fatalf("trash measured as %+v; want 2 entries, at least 128 KiB, the oldest made %s", u, made(older))
		}

		control.RemoveOldTrash(r.c, time.Now())
		for _, p := range []string{older, newer} {
			if _, err := os.Lstat(p); err != nil {
				t.Fatalf("%s removed before its time: %v", p, err)
			}
		}
		// Just past the older entry's keep, not the newer's.
		control.RemoveOldTrash(r.c, made(newer).Add(time.Hour-time.Nanosecond))
		if _, err := os.Lstat(older); !os.IsNotExist(err) {
			t.Fatalf("older entry kept past its time: %v", err)
		}
		if _, err := os.Lstat(newer); err != nil {
			t.Fatalf("newer entry removed before its time: %v", err)
		}
		if got := counter(t, reg, "memohfs_trash_removed_total"); got != 1 {
			t.Fatalf("memohfs_trash_removed_total %v, want 1", got)
		}
		if b, err := os.ReadFile(victim); err != nil || string(b) != "the host's" {
			t.Fatalf("the host file a bot linked to: %q, %v", b, err)
		}
	})

	t.Run("sweep", func(t *testing.T) {
		r := newRig(t)
		reg := prometheus.NewRegistry()
		r.opts.TrashKeep = 2 * time.Second
		r.opts.Metrics = reg
		r.restart()
		entry := deleteWithLink(r, "swept", victim)
		testenv.Eventually(t, time.Minute, "the sweep removes the entry", func() bool {
			_, err := os.Lstat(entry)
			return os.IsNotExist(err)
		})
		testenv.Eventually(t, 10*time.Second, "the removal is counted", func() bool {
			return counter(t, reg, "memohfs_trash_removed_total") == 1
		})
		if b, err := os.ReadFile(victim); err != nil || string(b) != "the host's" {
			t.Fatalf("the host file a bot linked to: %q, %v", b, err)
		}
		if _, err := os.Stat(victimDir); err != nil {
			t.Fatalf("the host dir a bot linked to: %v", err)
		}
	})
}

type unixStat struct{ ctime time.Time }

func statCtime(t *testing.T, p string, st *unixStat) {
	t.Helper()
	var x unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, p, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_CTIME, &x); err != nil {
		t.Fatal(err)
	}
	st.ctime = time.Unix(x.Ctime.Sec, int64(x.Ctime.Nsec))
}
