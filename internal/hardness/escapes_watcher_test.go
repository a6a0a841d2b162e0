package hardness

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Attacks of TestEscapes (escapes_harness_test.go): the change watcher: a symlink swapped in during its walk, dirs renamed
// under a held fd, names gone again, and events lost on purpose.

// The watcher adds an inotify watch on every dir moved into data/ and
// walks it: a dir swapped for a symlink during that walk must not lead
// memohfs (root) to watch or list what the link points to. The bot moves
// a dir of 400 subdirs in, and swaps it for a symlink to a root-only dir
// outside at once or after a while; the window is hit when the watcher
// had not yet watched all of the dir's subdirs again when the swap came.
func escRaceWatcher(t *testing.T, e *escEnv) {
	bait := e.s.Env.TempDir(t)
	zz := filepath.Join(bait, "zz")
	inner := filepath.Join(zz, "inner")
	must(t, os.MkdirAll(inner, 0o700))
	must(t, os.Chmod(zz, 0o700))
	escWrite(t, filepath.Join(inner, "f"), "bait\n", 0o600)
	inos := map[uint64]string{}
	atimes := map[string]unix.Timespec{}
	for _, p := range []string{bait, zz, inner} {
		var st unix.Stat_t
		must(t, unix.Lstat(p, &st))
		inos[st.Ino] = p
		atimes[p] = st.Atim
	}
	if _, err := os.ReadDir(e.data(e.a)); err != nil { // the data dir is watched from its first use
		t.Fatal(err)
	}
	e.sh(t, e.a, `mkdir -p /data/wprep/w/zz && i=0; while [ $i -lt 400 ]; do mkdir /data/wprep/w/a$i; i=$((i+1)); done`)
	host := e.s.HostData(e.a)
	ents, err := os.ReadDir(filepath.Join(host, "wprep", "w"))
	must(t, err)
	sub := map[uint64]bool{}
	for _, d := range ents {
		var st unix.Stat_t
		must(t, unix.Lstat(filepath.Join(host, "wprep", "w", d.Name()), &st))
		sub[st.Ino] = true
	}
	watched := func() int {
		w, err := escInotifyInodes()
		must(t, err)
		n := 0
		for ino := range sub {
			if w[ino] {
				n++
			}
		}
		return n
	}
	if e.binds {
		// With binds memohfs watches no data dir (the kernel serves
		// data/; the FUSE node below goes uncached): nothing to race,
		// and no watch may be on the bot's dirs.
		if n := watched(); n != 0 {
			t.Fatalf("binds on, yet %d of wprep/w's subdirs are watched", n)
		}
		return
	}
	waitFor(t, time.Minute, "the watcher watches wprep/w's subdirs", func() bool { return watched() == len(sub) })
	hits, mid, rounds := 0, 0, 0
	for ; rounds < 60 && hits < 20; rounds++ {
		// mv /data/wprep/w /data/w; [spin]; mv /data/w /data/w.real; ln -s BAIT /data/w
		must(t, os.Rename(filepath.Join(host, "wprep", "w"), filepath.Join(host, "w")))
		for i := 0; i < (rounds%6)*20000; i++ { // from at once to a little later
			runtime.Gosched()
		}
		n := watched()
		must(t, os.Rename(filepath.Join(host, "w"), filepath.Join(host, "w.real")))
		must(t, os.Symlink(bait, filepath.Join(host, "w")))
		if n < len(sub) {
			hits++
			if n > 0 {
				mid++
			}
		}
		waitFor(t, time.Minute, "the watcher watches w.real's subdirs", func() bool { return watched() == len(sub) })
		must(t, os.Remove(filepath.Join(host, "w")))
		must(t, os.Rename(filepath.Join(host, "w.real"), filepath.Join(host, "wprep", "w")))
		waitFor(t, time.Minute, "the watcher watches wprep/w's subdirs", func() bool { return watched() == len(sub) })
	}
	t.Logf("watcher: %d of %d swaps came before the watcher had watched the moved dir's %d subdirs again (%d with the walk under way)",
		hits, rounds, len(sub), mid)
	if hits == 0 {
		t.Errorf("no swap came while the watcher was at the moved dir in %d rounds: the attack never hit its window", rounds)
	}
	w, err := escInotifyInodes()
	if err != nil {
		t.Fatal(err)
	}
	for ino, p := range inos {
		if w[ino] {
			t.Errorf("memohfs's watcher put an inotify watch on %s, outside the data dir, through a swapped-in symlink", p)
		}
	}
	for _, p := range []string{zz, inner} {
		var st unix.Stat_t
		must(t, unix.Lstat(p, &st))
		if st.Atim != atimes[p] {
			t.Errorf("%s (root 0700, outside the data dir) was listed since the attack began (atime moved)", p)
		}
	}
}

// A directory someone holds open (an fd, a working dir) that the bot
// renames away and back, or exchanges with a file and back, is the same
// directory on the host throughout: through data/, as on a local disk,
// it stays usable, through the held fd and by its path.
func escHeldDirRenamed(t *testing.T, e *escEnv) {
	native := e.s.Env.TempDir(t)
	host := e.s.HostData(e.a)
	for _, c := range []struct{ what, dir, hostDir string }{
		{"native ext4", native, native},
		{"data/", e.data(e.a), host},
	} {
		d := filepath.Join(c.dir, "held")
		must(t, os.Mkdir(d, 0o777))
		dfd, err := unix.Open(d, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		must(t, err)
		var got []string
		try := func(step string) {
			fd, err := unix.Openat(dfd, "f-"+step, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
			if err == nil {
				unix.Close(fd)
			}
			got = append(got, step+": held fd "+xOutcome(err))
			if step != "away" {
				got = append(got, step+": path "+xOutcome(os.WriteFile(filepath.Join(d, "p-"+step), nil, 0o644)))
			}
		}
		// Each step of the bot's ends with a marker file the mount had
		// cached as missing: once a stat shows it, the watcher has handled
		// the step (no listing, no lookup of the dir's names, which would
		// move the kernel's entries by themselves).
		step := 0
		bot := func(do func()) {
			step++
			m := fmt.Sprintf("held-marker-%d", step)
			if _, err := os.Lstat(filepath.Join(c.dir, m)); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("%s: %s: %v", c.what, m, err)
			}
			do()
			must(t, os.WriteFile(filepath.Join(c.hostDir, m), nil, 0o644))
			waitFor(t, time.Minute, c.what+": "+m+" seen", func() bool {
				_, err := os.Lstat(filepath.Join(c.dir, m))
				return err == nil
			})
		}
		h := filepath.Join(c.hostDir, "held")
		try("before")
		bot(func() { must(t, os.Rename(h, h+".x")) }) // mv held held.x
		try("away")
		bot(func() { must(t, os.Rename(h+".x", h)) }) // mv held.x held
		try("back")
		bot(func() { // exchange with a file, and back
			must(t, os.WriteFile(h+".f", nil, 0o644))
			must(t, unix.Renameat2(unix.AT_FDCWD, h, unix.AT_FDCWD, h+".f", unix.RENAME_EXCHANGE))
		})
		bot(func() { must(t, unix.Renameat2(unix.AT_FDCWD, h, unix.AT_FDCWD, h+".f", unix.RENAME_EXCHANGE)) })
		try("exchanged")
		unix.Close(dfd)
		for _, g := range got {
			if !strings.HasSuffix(g, " ok") {
				t.Errorf("%s: %s (want ok, as on ext4)", c.what, g)
			}
		}
		t.Logf("%s: %s", c.what, strings.Join(got, "; "))
	}
}

// After a user removed a name through data/, the bot makes a dir there
// (seen through data/) and removes it again: a stat through data/ sees
// it gone, as on a local disk. (memohfs notes its own removal; that note
// must not make the bot's later removal look like memohfs's own, which
// would leave the dir in the kernel's cache for the entry TTL.)
func escGoneAgain(t *testing.T, e *escEnv) {
	native := e.s.Env.TempDir(t)
	for _, c := range []struct{ what, dir, hostDir string }{
		{"native ext4", native, native},
		{"data/", e.data(e.a), e.s.HostData(e.a)},
	} {
		p, h := filepath.Join(c.dir, "gone-again"), filepath.Join(c.hostDir, "gone-again")
		must(t, os.WriteFile(p, nil, 0o644))
		must(t, os.Remove(p))
		must(t, os.Mkdir(h, 0o755)) // as the bot
		waitFor(t, time.Minute, c.what+": the bot's dir seen", func() bool { _, err := os.Lstat(p); return err == nil })
		must(t, os.Remove(h)) // as the bot
		// A marker the mount had cached as missing, made after: once a
		// stat shows it, the watcher has handled the removal (it tells
		// changes in the order they came, bursts of one path included).
		m := filepath.Join(c.dir, "gone-again-marker")
		if _, err := os.Lstat(m); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%s: %v", m, err)
		}
		must(t, os.WriteFile(filepath.Join(c.hostDir, "gone-again-marker"), nil, 0o644))
		waitFor(t, time.Minute, c.what+": the marker seen", func() bool { _, err := os.Lstat(m); return err == nil })
		if fi, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: the bot removed gone-again, a stat still shows it: %v %v", c.what, fi, err)
		}
	}
}

// A bot can make memohfs's watcher lose events at will (more than
// fs.inotify.max_queued_events queued: a tight loop of renames). A name
// looked up through data/ as missing (the kernel caches that for an
// hour), then made by the bot while its events are being lost, is seen
// once the watcher has caught up, as on a local disk: losing events drops
// the negative entries too, not only those of the files the kernel has.
// The test waits for the watcher to lose events (the window: it fails if
// it never does), then for the name to show (a kept negative entry would
// hide it for the hour). It does not
// use settle: the thousands of dirs moved about can put the bot past its
// watch limit, and then a file of data/'s top is served uncached, so the
// marker shows before the watcher is past the changes.
func escOverflowMissing(t *testing.T, e *escEnv) {
	host := e.s.HostData(e.a)
	p := e.data(e.a, "ovf-new")
	if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s: %v", p, err)
	}
	overflows := e.s.FS.WatchOverflows(e.a)
	must(t, os.WriteFile(filepath.Join(host, "ovf-a"), nil, 0o644))
	t.Cleanup(func() { escRemove(host, "ovf-a", "ovf-b", "ovf-d", "ovf-e", "ovf-new") })
	fd, err := unix.Open(host, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	must(t, err)
	defer unix.Close(fd)
	// A dir of 1,000 dirs moved back and forth: the watcher walks it
	// again at each move, while cheap renames of a file queue events.
	must(t, unix.Mkdirat(fd, "ovf-d", 0o755))
	for i := 0; i < 1000; i++ {
		must(t, unix.Mkdirat(fd, "ovf-d/"+itoa(i), 0o755))
	}
	n := 0
	for i := 0; i < 2000; i++ {
		d, d2 := "ovf-d", "ovf-e"
		if i%2 == 1 {
			d, d2 = d2, d
		}
		must(t, unix.Renameat(fd, d, fd, d2))
		for j := 0; j < 20; j++ { // 80k events in all, 5 times the default queue
			a, b := "ovf-a", "ovf-b"
			if j%2 == 1 {
				a, b = b, a
			}
			if unix.Renameat(fd, a, fd, b) == nil {
				n++
			}
		}
	}
	must(t, os.WriteFile(filepath.Join(host, "ovf-new"), nil, 0o644))
	if !e.binds { // with binds the kernel serves data/: nothing is watched, nothing lost
		waitFor(t, 2*time.Minute, "the watcher losing the bot's events (the window)", func() bool {
			return e.s.FS.WatchOverflows(e.a) > overflows
		})
	}
	waitFor(t, time.Minute, "ovf-new, made by the bot, seen through data/ (the kernel's negative entry dropped)", func() bool {
		_, err := os.Lstat(p)
		return err == nil
	})
	t.Logf("%d renames by the bot, then ovf-new made; the watcher lost events %d times, and ovf-new was seen", n+2000, e.s.FS.WatchOverflows(e.a)-overflows)
}

// escInotifyInodes lists the inodes this process's inotify instances
// watch (memohfs runs in the test process).
func escInotifyInodes() (map[uint64]bool, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil, err
	}
	inos := map[uint64]bool{}
	for _, d := range ents {
		if l, _ := os.Readlink("/proc/self/fd/" + d.Name()); l != "anon_inode:inotify" {
			continue
		}
		b, err := os.ReadFile("/proc/self/fdinfo/" + d.Name())
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.HasPrefix(line, "inotify ") {
				continue
			}
			for _, f := range strings.Fields(line) {
				if v, ok := strings.CutPrefix(f, "ino:"); ok {
					if n, err := strconv.ParseUint(v, 16, 64); err == nil {
						inos[n] = true
					}
				}
			}
		}
	}
	return inos, nil
}
