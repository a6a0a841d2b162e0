package fsnodes

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/memohfs/memohfs/internal/testenv"
	"golang.org/x/sys/unix"
)

// These tests run the watcher against real dirs with real inotify. A
// negative (an event that must not be told) is checked by ordering: the
// tree's events are handled one at a time in the order they happened, so
// once an event made after it is told, it would have been told already.

const watchWait = 20 * time.Second // a loaded 2-core machine; conditions, not sleeps

// logBuf is a slog destination tests can read while the watcher writes.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) count(sub ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range strings.Split(l.b.String(), "\n") {
		all := line != ""
		for _, s := range sub {
			all = all && strings.Contains(line, s)
		}
		if all {
			n++
		}
	}
	return n
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// told records what a tree was told.
type told struct {
	mu  sync.Mutex
	chs []change
}

func (r *told) tell(ch change) {
	r.mu.Lock()
	r.chs = append(r.chs, ch)
	r.mu.Unlock()
}

func (r *told) has(pred func(change) bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.ContainsFunc(r.chs, pred)
}

func (r *told) rel(rel string) bool { return r.has(func(c change) bool { return c.Rel == rel }) }
func (r *told) overflow() bool      { return r.has(func(c change) bool { return c.Overflow }) }
func (r *told) waitRel(t *testing.T, rel string) {
	t.Helper()
	testenv.Eventually(t, watchWait, "told about "+rel, func() bool { return r.rel(rel) })
}

func newTestWatcher(t *testing.T, lim watchLimits) (*watcher, *logBuf) {
	lb := &logBuf{}
	w := newWatcherWith(slog.New(slog.NewTextHandler(lb, nil)), lim)
	t.Cleanup(w.close)
	return w, lb
}

func touch(t *testing.T, p string) {
	t.Helper()
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

func mkdirs(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
}

// synced makes events at the root of the tree until one is told:
// everything the tree's goroutine had to do before (its first walk,
// which may not have watched the root yet, earlier events) is done.
func synced(t *testing.T, root string, r *told) {
	t.Helper()
	var names []string
	testenv.Eventually(t, watchWait, "told about a change at "+root, func() bool {
		for _, n := range names {
			if r.rel(n) {
				return true
			}
		}
		name := "sync-" + strconv.FormatInt(time.Now().UnixNano(), 36)
		touch(t, filepath.Join(root, name))
		names = append(names, name)
		return false
	})
}

func stats(t *testing.T, w *watcher, root string) watchStats {
	t.Helper()
	st, ok := w.stats(root)
	if !ok {
		t.Fatalf("%s is not watched", root)
	}
	return st
}

// TestWatchOverflowIsPerTree: events lost in one bot's tree (a real
// IN_Q_OVERFLOW: more than fs.inotify.max_queued_events queued while its
// goroutine is held in a tell) tell that tree to drop its caches and walk
// again; the other tree keeps being told about its changes meanwhile and
// is never told to drop anything.
func TestWatchOverflowIsPerTree(t *testing.T) {
	w, lb := newTestWatcher(t, watchLimits{})
	a, b := t.TempDir(), t.TempDir()
	mkdirs(t, filepath.Join(a, "sub"))
	mkdirs(t, filepath.Join(b, "sub"))
	var ra, rb told
	entered, release := make(chan struct{}), make(chan struct{})
	var gate sync.Once
	w.watchTree(a, func(ch change) {
		if ch.Rel == "gate" {
			gate.Do(func() { close(entered); <-release })
		}
		ra.tell(ch)
	})
	w.watchTree(b, rb.tell)
	synced(t, a, &ra)
	synced(t, b, &rb)

	// Hold a's goroutine in a tell, then queue more events than its
	// instance can hold.
	touch(t, filepath.Join(a, "gate"))
	select {
	case <-entered:
	case <-time.After(watchWait):
		t.Fatal("a was not told about gate")
	}
	limit := inotifySysctl("max_queued_events")
	if limit <= 0 {
		t.Fatal("cannot read fs.inotify.max_queued_events")
	}
	for i := 0; i < limit+64; i++ {
		f, err := os.Create(filepath.Join(a, "sub", "f"+strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	// b is told about its own changes while a is held: its own instance,
	// its own goroutine.
	touch(t, filepath.Join(b, "sub", "while-a-is-held"))
	rb.waitRel(t, "sub/while-a-is-held")
	close(release)

	testenv.Eventually(t, watchWait, "a told of the overflow", ra.overflow)
	synced(t, a, &ra) // a walked again and is told about changes again
	touch(t, filepath.Join(a, "sub", "after"))
	ra.waitRel(t, "sub/after")
	if !w.covers(a)("sub/after") {
		t.Errorf("a does not cover sub/ after its walk again")
	}
	synced(t, b, &rb)
	if rb.overflow() {
		t.Errorf("b was told to drop its caches because of a's overflow")
	}
	if st := stats(t, w, a); st.Overflows != 1 || !slices.Contains(st.Degraded, degradedOverflow) {
		t.Errorf("a's stats: %+v, want 1 overflow", st)
	}
	if st := stats(t, w, b); st.Overflows != 0 || len(st.Degraded) != 0 {
		t.Errorf("b's stats: %+v, want no overflow", st)
	}
	if n := lb.count("degraded", "dir="+a, "max_queued_events"); n != 1 {
		t.Errorf("a's overflow logged %d times, want once:\n%s", n, lb)
	}
	if n := lb.count("dir=" + b); n != 0 {
		t.Errorf("b logged:\n%s", lb)
	}
}

// TestWatchDepthLimit: directories deeper than MaxDepth are not watched;
// the tree does not cover them (nor names in a directory whose subdirs
// were left out), is told about changes where it is watched and not
// below, and logs the limit once however often it is hit. A symlink to a
// dir outside the tree is not followed.
func TestWatchDepthLimit(t *testing.T) {
	w, lb := newTestWatcher(t, watchLimits{MaxDepth: 3})
	root, outside := t.TempDir(), t.TempDir()
	mkdirs(t, filepath.Join(root, "d1/d2/d3/d4/d5"))
	mkdirs(t, filepath.Join(root, "e1"))
	if err := os.Symlink(outside, filepath.Join(root, "out")); err != nil {
		t.Fatal(err)
	}
	var r told
	w.watchTree(root, r.tell)
	synced(t, root, &r)
	if st := stats(t, w, root); st.Watches != 5 || st.Nodes != 5 { // root, d1, d2, d3, e1
		t.Fatalf("watches: %+v, want 5 (depth 0..3)", st)
	}
	cov := w.covers(root)
	for rel, want := range map[string]bool{
		".": true, "d1": true, "d1/d2": true, "d1/d2/f": true, "d1/d2/d3": true, "e1/f": true,
		"d1/d2/d3/f": false, "d1/d2/d3/d4": false, "d1/d2/d3/d4/f": false, "d1/d2/d3/d4/d5/f": false,
		"out/f": false, "nothere/f": false,
	} {
		if got := cov(rel); got != want {
			t.Errorf("covers(%q) = %v, want %v", rel, got, want)
		}
	}

	touch(t, filepath.Join(root, "d1/d2/d3/d4/below"))
	touch(t, filepath.Join(outside, "outside"))
	touch(t, filepath.Join(root, "d1/d2/d3/at-limit"))
	r.waitRel(t, "d1/d2/d3/at-limit")
	if r.rel("d1/d2/d3/d4/below") || r.has(func(c change) bool { return strings.Contains(c.Rel, "outside") }) {
		t.Errorf("told about a change below the depth limit or outside the tree: %+v", r.chs)
	}

	// Made later: a dir within the limit is watched, one beyond is not.
	mkdirs(t, filepath.Join(root, "e1/e2/e3/e4"))
	mkdirs(t, filepath.Join(root, "d1/d2/d3/d4b"))
	synced(t, root, &r)
	touch(t, filepath.Join(root, "e1/e2/e3/e4/below"))
	touch(t, filepath.Join(root, "e1/e2/e3/in"))
	r.waitRel(t, "e1/e2/e3/in")
	if r.rel("e1/e2/e3/e4/below") {
		t.Errorf("told about a change in a dir made beyond the depth limit")
	}
	if !cov("e1/e2/e3") || cov("e1/e2/e3/e4") || cov("d1/d2/d3/d4b") {
		t.Errorf("covers after mkdir: e1/e2/e3 %v, e1/e2/e3/e4 %v, d1/d2/d3/d4b %v", cov("e1/e2/e3"), cov("e1/e2/e3/e4"), cov("d1/d2/d3/d4b"))
	}
	if st := stats(t, w, root); st.Watches != 7 {
		t.Errorf("watches after mkdir: %+v, want 7", st)
	}
	if n := lb.count("degraded", "dir="+root, "deeper than 3 levels"); n != 1 {
		t.Errorf("the depth limit was logged %d times, want once:\n%s", n, lb)
	}
}

// TestWatchLimitPerTree: a tree with more directories than MaxWatches
// holds MaxWatches watches, does not cover the rest and logs it once; a
// second tree under the same watcher is watched whole. Removing watched
// dirs gives their watches back to the tree.
func TestWatchLimitPerTree(t *testing.T) {
	w, lb := newTestWatcher(t, watchLimits{MaxWatches: 5})
	big, small := t.TempDir(), t.TempDir()
	for i := 0; i < 9; i++ {
		mkdirs(t, filepath.Join(big, "d"+strconv.Itoa(i)))
	}
	mkdirs(t, filepath.Join(small, "a/b/c"))
	var rbig, rsmall told
	w.watchTree(big, rbig.tell)
	w.watchTree(small, rsmall.tell)
	synced(t, big, &rbig)
	synced(t, small, &rsmall)
	if st := stats(t, w, big); st.Watches != 5 || !slices.Contains(st.Degraded, degradedWatches) {
		t.Fatalf("big: %+v, want 5 watches and the limit hit", st)
	}
	if st := stats(t, w, small); st.Watches != 4 || len(st.Degraded) != 0 {
		t.Fatalf("small: %+v, want all 4 dirs watched", st)
	}
	cov := w.covers(big)
	var watched, unwatched []string
	for i := 0; i < 9; i++ {
		d := "d" + strconv.Itoa(i)
		if cov(d) {
			watched = append(watched, d)
		} else {
			unwatched = append(unwatched, d)
		}
	}
	if len(watched) != 4 || len(unwatched) != 5 {
		t.Fatalf("covered %v, not %v: want 4 and 5", watched, unwatched)
	}
	if cov("file-at-root") {
		t.Errorf("names in a dir with unwatched subdirs are covered")
	}
	if !w.covers(small)("a/b/c/f") {
		t.Errorf("small does not cover a/b/c/f")
	}
	touch(t, filepath.Join(big, unwatched[0], "f"))
	touch(t, filepath.Join(big, watched[0], "f"))
	rbig.waitRel(t, watched[0]+"/f")
	if rbig.rel(unwatched[0] + "/f") {
		t.Errorf("told about a change in an unwatched dir")
	}

	// Two watched dirs go: a new one is watched.
	for _, d := range watched[1:3] {
		if err := os.Remove(filepath.Join(big, d)); err != nil {
			t.Fatal(err)
		}
	}
	synced(t, big, &rbig)
	mkdirs(t, filepath.Join(big, "new"))
	synced(t, big, &rbig)
	if !cov("new") {
		t.Errorf("a dir made after others were removed is not covered: %+v", stats(t, w, big))
	}
	if st := stats(t, w, big); st.Watches != 4 {
		t.Errorf("big after rmdir and mkdir: %+v, want 4 watches", st)
	}
	if n := lb.count("degraded", "dir="+big, "watch limit (5)"); n != 1 {
		t.Errorf("the watch limit was logged %d times, want once:\n%s", n, lb)
	}
	if n := lb.count("dir=" + small); n != 0 {
		t.Errorf("small logged:\n%s", lb)
	}
}

// treeFds counts this process's fds open on root or below it (a link
// too long to read is below it: only the deep walk has such paths), but
// for the files synced makes (the test's own, made while the walk runs).
func treeFds(t *testing.T, root string) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Error(err)
	}
	n := 0
	for _, e := range ents {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if strings.HasPrefix(filepath.Base(target), "sync-") {
			continue
		}
		if errors.Is(err, syscall.ENAMETOOLONG) || err == nil && (target == root || strings.HasPrefix(target, root+"/")) {
			n++
		}
	}
	return n
}

// TestWatchWalkFdsBounded: walking a chain of directories 300 deep, with
// relative paths longer than PATH_MAX, watches every level and never
// holds more than watchMaxFds fds: the inotify instance, and at most 3
// on the tree (counted at each step of the walk, where it holds the
// most). Unwatching gives them back.
func TestWatchWalkFdsBounded(t *testing.T) {
	const depth = 300
	name := strings.Repeat("n", 40) // 300 levels of 41 bytes: ~12 KiB, three PATH_MAX
	root := t.TempDir()
	mkChain(t, root, name, depth)
	w, _ := newTestWatcher(t, watchLimits{MaxDepth: 1000})
	var mu sync.Mutex
	peak, steps := 0, 0
	w.hook = func() {
		n := treeFds(t, root)
		mu.Lock()
		peak, steps = max(peak, n), steps+1
		mu.Unlock()
	}
	if n := treeFds(t, root); n != 0 {
		t.Fatalf("%d fds on the tree before watching it", n)
	}
	var r told
	w.watchTree(root, r.tell)
	synced(t, root, &r)
	st := stats(t, w, root)
	mu.Lock()
	p, s := peak, steps
	mu.Unlock()
	t.Logf("%d dirs watched; at most %d fds on the tree during the walk (%d steps measured)", st.Watches, p, s)
	if st.Watches != depth+1 {
		t.Fatalf("watches: %+v, want %d", st, depth+1)
	}
	if s < depth+1 {
		t.Fatalf("the walk was measured %d times, want at least %d", s, depth+1)
	}
	if p+1 > watchMaxFds { // and its inotify instance
		t.Fatalf("the walk held %d fds on the tree and its instance, want at most %d", p+1, watchMaxFds)
	}
	rel := strings.TrimSuffix(strings.Repeat(name+"/", depth), "/")
	if !w.covers(root)(rel + "/f") {
		t.Errorf("the deepest dir is not covered")
	}
	w.unwatchTree(root)
	testenv.Eventually(t, watchWait, "fds given back", func() bool { return treeFds(t, root) == 0 })
}

// mkChain makes depth nested dirs called name in root, level by level
// from an fd (a path this long cannot be made by name).
func mkChain(t *testing.T, root, name string, depth int) {
	t.Helper()
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	for range depth {
		if err := unix.Mkdirat(fd, name, 0o755); err != nil {
			t.Fatal(err)
		}
		next, err := unix.Openat(fd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		fd = next
	}
	unix.Close(fd)
}

// TestWatchInstanceShare: memohfs takes at most half of the host's
// inotify instances (fs.inotify.max_user_instances). Trees past its
// share are served uncached and say so once (the rest is left to the
// host's other processes); a tree's instance goes back to the share
// when it is unwatched.
func TestWatchInstanceShare(t *testing.T) {
	w, lb := newTestWatcher(t, watchLimits{})
	share := int64(inotifySysctl("max_user_instances")) / 2
	if share < 1 {
		t.Fatal("no fs.inotify.max_user_instances")
	}
	var roots []string
	var r told
	for need := share - instances.held.Load(); int64(len(roots)) <= need; {
		root := t.TempDir()
		roots = append(roots, root)
		w.watchTree(root, r.tell)
	}
	last := roots[len(roots)-1]
	if instances.held.Load() != share {
		t.Fatalf("memohfs holds %d instances, want its share %d", instances.held.Load(), share)
	}
	if w.covers(last)(".") {
		t.Errorf("a tree past the share is covered")
	}
	if n := lb.count("degraded", "dir="+last, "at most half of fs.inotify.max_user_instances"); n != 1 {
		t.Errorf("the share was logged %d times for the last tree, want once:\n%s", n, lb)
	}
	w.unwatchTree(roots[0])
	testenv.Eventually(t, watchWait, "the first tree's instance back in the share", func() bool { return instances.held.Load() < share })
}
