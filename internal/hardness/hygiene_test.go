package hardness

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/splice"
	"github.com/memohfs/memohfs/internal/testenv"
	"github.com/memohfs/memohfs/internal/teststack"
	"golang.org/x/sys/unix"
)

// census is what the test process (the daemon: fsnodes serves in
// process) holds at one moment.
type census struct {
	total int // runtime.NumGoroutine
	// fuse counts go-fuse's own server goroutines (Serve and its request
	// readers, (*Server).loop). Their number floats by design: a reader
	// that takes a request starts another when none is left reading, and
	// readers above maxReaders (GOMAXPROCS clamped to [2, 16]) exit, so
	// an idle server keeps between 1 and maxReaders+1 readers, plus Serve
	// waiting for them once its own loop has exited. They are bounded,
	// not compared.
	fuse   int
	sites  map[string]int    // every other goroutine, by the function that started it
	stacks map[string]string // one stack per site, for the report
	// fds counts open fds by what they point at (socket:[n] -> socket;
	// an fd on a mount that is no longer in mountinfo, detached but
	// kept alive by the fd, is marked so).
	fds map[string]int
	// splice is the size of go-fuse's process-wide pool of pipe pairs
	// (splice.Total, two fds each) and spliceUsed the pairs in use. The
	// pool keeps every pair it made: it grows to the most replies spliced
	// at once (log reads go through the daemon and are spliced) and never
	// shrinks. Pipe fds beyond the baseline are accounted to it.
	splice, spliceUsed int
}

// fuseMax is the most go-fuse server goroutines one idle mount keeps.
func fuseMax() int { return min(max(runtime.GOMAXPROCS(0), 2), 16) + 2 }

func takeCensus() census {
	c := census{total: runtime.NumGoroutine(), sites: map[string]int{}, stacks: map[string]string{}, fds: map[string]int{}}
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	for _, g := range strings.Split(string(buf), "\n\n") {
		site := "(no creator)"
		if i := strings.LastIndex(g, "\ncreated by "); i >= 0 {
			site, _, _ = strings.Cut(g[i+len("\ncreated by "):], "\n")
			site, _, _ = strings.Cut(site, " in goroutine ")
		}
		// A reader that has not run yet shows only its go wrapper, hence
		// the creator too.
		if strings.Contains(g, "go-fuse/v2/fuse.(*Server).loop(") || strings.Contains(g, "go-fuse/v2/fuse.(*Server).Serve(") ||
			strings.HasSuffix(site, "go-fuse/v2/fuse.(*fuseFD).readRequest") {
			c.fuse++
			continue
		}
		c.sites[site]++
		if _, ok := c.stacks[site]; !ok {
			c.stacks[site] = g
		}
	}
	mounted := map[string]bool{}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if id, _, ok := strings.Cut(line, " "); ok {
				mounted[id] = true
			}
		}
	}
	self := "/proc/" + strconv.Itoa(os.Getpid()) + "/fd"
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || target == self {
			continue // closed meanwhile, or the listing's own fd
		}
		for _, kind := range []string{"socket:[", "pipe:["} {
			if strings.HasPrefix(target, kind) {
				target = kind[:len(kind)-2]
			}
		}
		if target == "socket" {
			// Name the process at the other end of a unix socket.
			if fd, err := strconv.Atoi(e.Name()); err == nil {
				if cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil && cred.Pid > 0 {
					comm, _ := os.ReadFile("/proc/" + strconv.Itoa(int(cred.Pid)) + "/comm")
					target = "socket to " + strings.TrimSpace(string(comm))
				}
			}
		}
		if info, err := os.ReadFile("/proc/self/fdinfo/" + e.Name()); err == nil && strings.HasPrefix(target, "/") {
			for _, line := range strings.Split(string(info), "\n") {
				if id, ok := strings.CutPrefix(line, "mnt_id:"); ok && !mounted[strings.TrimSpace(id)] {
					target += " [on a detached mount]"
				}
			}
		}
		c.fds[target]++
	}
	c.splice, c.spliceUsed = splice.Total(), splice.Used()
	return c
}

func (c census) nfds() int {
	n := 0
	for _, v := range c.fds {
		n += v
	}
	return n
}

func (c census) same(o census) bool {
	return c.fuse == o.fuse && c.splice == o.splice && mapsEqual(c.sites, o.sites) && mapsEqual(c.fds, o.fds)
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// poolMax is the store's Postgres pool size (store.Open's default
// MaxConns): pgxpool keeps idle connections (30 min), so the pool grows to
// the most queries run at once (4 events readers starting together) and
// stays there. A connection that leaked out of the pool would still count
// against it, and at the bound every query would block, so sockets to
// postgres are bounded, not compared.
const poolMax = 10

// fdExcess is c's fds beyond base by target, less go-fuse's splice pool
// and the Postgres pool (within its bound).
func (c census) fdExcess(base census) map[string]int {
	out := map[string]int{}
	for target, n := range c.fds {
		d := n - base.fds[target]
		switch {
		case target == "pipe":
			d -= 2 * (c.splice - base.splice) // go-fuse's splice pool (see census)
		case target == "socket to postgres" && n <= poolMax:
			d = 0
		}
		if d > 0 {
			out[target] = d
		}
	}
	return out
}

// growth says what c holds beyond base: goroutines by where they were
// started (with a stack), fds by target, go-fuse goroutines beyond their
// bound. Empty when nothing grew.
func (c census) growth(base census) string {
	var out []string
	for _, site := range sortedKeys(c.sites) {
		if d := c.sites[site] - base.sites[site]; d > 0 {
			out = append(out, fmt.Sprintf("+%d goroutines started by %s, e.g.:\n%s", d, site, indent(c.stacks[site])))
		}
	}
	if c.fuse > fuseMax() {
		out = append(out, fmt.Sprintf("%d go-fuse server goroutines, more than the %d an idle server keeps", c.fuse, fuseMax()))
	}
	if c.spliceUsed > 0 {
		out = append(out, fmt.Sprintf("%d of go-fuse's splice pipe pairs in use while idle", c.spliceUsed))
	}
	ex := c.fdExcess(base)
	for _, target := range sortedKeys(ex) {
		out = append(out, fmt.Sprintf("+%d fds to %s", ex[target], target))
	}
	return strings.Join(out, "\n")
}

// grew is growth in one line: sites and fd targets with their counts.
func (c census) grew(base census) string {
	var out []string
	for _, site := range sortedKeys(c.sites) {
		if d := c.sites[site] - base.sites[site]; d > 0 {
			out = append(out, fmt.Sprintf("+%d by %s", d, site))
		}
	}
	ex := c.fdExcess(base)
	for _, target := range sortedKeys(ex) {
		out = append(out, fmt.Sprintf("+%d fds to %s", ex[target], target))
	}
	if c.splice != base.splice {
		out = append(out, fmt.Sprintf("go-fuse's splice pool %d -> %d pairs", base.splice, c.splice))
	}
	if p, b := c.fds["socket to postgres"], base.fds["socket to postgres"]; p != b {
		out = append(out, fmt.Sprintf("Postgres pool %d -> %d connections", b, p))
	}
	return strings.Join(out, "; ")
}

func (c census) String() string {
	return fmt.Sprintf("%d goroutines (%d of them go-fuse's server), %d fds (%d of them go-fuse's %d splice pipe pairs, %d to postgres)",
		c.total, c.fuse, c.nfds(), 2*c.splice, c.splice, c.fds["socket to postgres"])
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func indent(s string) string { return "\t" + strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n\t") }

// settledCensus waits until two censuses 200 ms apart agree.
func settledCensus(t *testing.T, limit time.Duration) census {
	t.Helper()
	prev := takeCensus()
	deadline := time.Now().Add(limit)
	for {
		time.Sleep(200 * time.Millisecond)
		cur := takeCensus()
		if cur.same(prev) {
			return cur
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines and fds did not settle within %v: %v, then %v", limit, prev, cur)
		}
		prev = cur
	}
}

// backTo waits (up to limit) until nothing has grown beyond base in two
// censuses 100 ms apart, and returns the last census and what grew.
// Handles are released by the kernel after close returns (RELEASE is
// asynchronous), so a moment is allowed.
func backTo(base census, limit time.Duration) (census, string) {
	deadline := time.Now().Add(limit)
	clean := 0
	for {
		cur := takeCensus()
		g := cur.growth(base)
		if g == "" {
			if clean++; clean == 2 {
				return cur, ""
			}
		} else {
			clean = 0
		}
		if time.Now().After(deadline) {
			return cur, g
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// readRetry is read(2) again after EINTR, counting them in eintr: a
// FUSE read is interrupted by any signal the thread gets (the Go runtime
// sends SIGURG to preempt), and events answers an interrupted wait with
// EINTR, which the kernel hands on as it is. os.File retries it the
// same way.
func readRetry(fd int, b []byte, eintr *atomic.Int64) (int, error) {
	for {
		n, err := unix.Read(fd, b)
		if err != unix.EINTR {
			return n, err
		}
		eintr.Add(1)
	}
}

// perFile is how many open/close cycles TestHygiene runs on each file and
// directory of a bot and of a snapshot: the count README.md's hardness
// table states for it ("1,000 open/close cycles of every synthetic file";
// TestHygieneCountIsREADMEs holds the two together). make soak runs ten
// times as many.
const perFile = 1000

// TestHygiene: perFile (1,000) open/read/close cycles of every synthetic
// file (and of data/, skills/, snapshots/ and the snapshot views) leave the
// daemon with the goroutines and fds it had before, they stack no mounts,
// and after the unmount no mount of the test is left. Every entry a bot's
// directory and a snapshot's directory list must have its cycles: a file
// added to the tree without them fails the test. events gets perFile
// more of a reader that waits and is woken by an event, and perFile of
// readers interrupted while they wait (four at once). The scenarios after
// them (snapshot and bot lifetimes) each run container operations per
// cycle, and run fewer.
func TestHygiene(t *testing.T) {
	// Registered before the stack, so it runs after all of the stack's
	// cleanups. Caveat: testenv.TempDir's cleanup (registered inside
	// newStack, so it runs before this one) detaches whatever is still
	// mounted under its dirs, so for them this is a backstop: a failed
	// FUSE unmount is reported by newStack itself, and a mount kept alive
	// by a daemon fd after a lazy detach shows in the fd observation.
	var s *stack
	var mntDir string
	preStack := takeCensus()
	var teardown time.Time
	t.Cleanup(func() {
		if s == nil {
			return
		}
		t.Logf("the stack's cleanups (unmount, views, controller, store, runtime) took %v", time.Since(teardown).Round(time.Millisecond))
		for _, dir := range []string{s.Mnt, mntDir, s.RuntimeConfig.StateDir} {
			if left := testenv.MountsUnder(dir); len(left) > 0 {
				t.Errorf("mounts left under %s after the unmount: %v", dir, left)
			}
		}
		// Not asserted (a daemon exits after its unmount), but told.
		if _, g := backTo(preStack, 2*time.Second); g != "" {
			t.Logf("observation: held after the stack's cleanups, beyond what the process had before the stack:\n%s", g)
		}
	})
	s = newStack(t, teststack.Options{})
	t.Cleanup(func() { teardown = time.Now() }) // runs first of the stack's
	mntDir = filepath.Dir(s.Mnt)
	const bot, snap = "hyg", "s1"
	p := func(rel ...string) string { return s.Path(append([]string{bot}, rel...)...) }

	must(t, os.Mkdir(s.Path(bot), 0o755))
	must(t, os.WriteFile(p("data", "note"), []byte("note\n"), 0o644))
	must(t, os.MkdirAll(p("data", "dir", "sub"), 0o755))
	must(t, os.MkdirAll(p("skills", "demo"), 0o755))
	must(t, os.WriteFile(p("skills", "demo", "SKILL.md"), []byte("# demo\n"), 0o644))
	s.MustCtl(bot, "start")
	must(t, os.Mkdir(p("snapshots", snap), 0o755))
	// A regular file of the snapshot's rootfs to open.
	rootfsFile := ""
	for _, cand := range []string{"etc/passwd", "etc/group", "etc/hostname", "etc/os-release"} {
		if fi, err := os.Lstat(p("snapshots", snap, "rootfs", cand)); err == nil && fi.Mode().IsRegular() {
			rootfsFile = cand
			break
		}
	}
	if rootfsFile == "" {
		t.Fatalf("no regular file to open in the snapshot's rootfs: %v", s.names(bot, "snapshots", snap, "rootfs", "etc"))
	}

	readFile := func(rel ...string) func(int) error {
		return func(int) error { _, err := os.ReadFile(p(rel...)); return err }
	}
	list := func(path string) func(int) error {
		return func(int) error { _, err := os.ReadDir(path); return err }
	}
	var eintr atomic.Int64
	var rmdirTook [2][]time.Duration // rmdir of a bot: [data/ view read] [data/ and rootfs/ views read]
	n := count(perFile, 10*perFile)
	type cycle struct {
		name string
		n    int
		do   func(i int) error
		// files are the entries of the bot's or the snapshot's dir
		// (relative to the bot's dir) whose open/close cycles these are.
		files []string
	}
	cycles := []cycle{
		{"ctl (open O_TRUNC, a verb every 20th, a bad one every 20th, read the verb list)", n, func(i int) error {
			f, err := os.OpenFile(p("ctl"), os.O_WRONLY|os.O_TRUNC, 0)
			if err != nil {
				return err
			}
			switch i % 20 {
			case 0:
				_, err = f.WriteString("autostart off\n")
			case 10:
				if _, werr := f.WriteString("bogus\n"); fileOpErrno(werr) != syscall.EINVAL {
					err = fmt.Errorf("bad verb: %v, want EINVAL", werr)
				}
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			_, err = os.ReadFile(p("ctl"))
			return err
		}, []string{"ctl"}},
		{"status", n, readFile("status"), []string{"status"}},
		{"err", n, readFile("err"), []string{"err"}},
		{"events (O_NONBLOCK, to the end)", n, func(int) error {
			fd, err := unix.Open(p("events"), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			buf, got := make([]byte, 64<<10), 0
			for {
				m, err := readRetry(fd, buf, &eintr)
				if err != nil {
					return err
				}
				if m == 0 {
					break
				}
				got += m
			}
			if got == 0 {
				return errors.New("no events")
			}
			return nil
		}, []string{"events"}},
		{"log", n, readFile("log"), []string{"log"}},
		{"snapshots/<s>/info", n, readFile("snapshots", snap, "info"), []string{"snapshots/" + snap + "/info"}},
		{"snapshots/<s>/data/ file", n, readFile("snapshots", snap, "data", "note"), nil},
		{"snapshots/<s>/data/ listing", n, list(p("snapshots", snap, "data")), []string{"snapshots/" + snap + "/data"}},
		{"snapshots/<s>/rootfs/ listing", n, list(p("snapshots", snap, "rootfs")), []string{"snapshots/" + snap + "/rootfs"}},
		{"snapshots/<s>/rootfs/ file", n, readFile("snapshots", snap, "rootfs", rootfsFile), nil},
		{"snapshots/ listing", n, list(p("snapshots")), []string{"snapshots"}},
		{"skills/ listing and file", n, func(i int) error {
			if _, err := os.ReadDir(p("skills")); err != nil {
				return err
			}
			_, err := os.ReadFile(p("skills", "demo", "SKILL.md"))
			return err
		}, []string{"skills"}},
		{"cmd/: a connection each (clone, its ctl, status, close); an exec with its streams every 50th", n, func(i int) error {
			f, err := os.OpenFile(p("cmd", "clone"), os.O_RDWR, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			buf := make([]byte, 16)
			m, err := f.Read(buf)
			if err != nil {
				return err
			}
			conn := p("cmd", strings.TrimSpace(string(buf[:m])))
			if i%50 != 0 {
				if _, err := f.WriteString("dir /tmp\n"); err != nil {
					return err
				}
				st, err := os.ReadFile(filepath.Join(conn, "status"))
				if err == nil && !strings.Contains(string(st), "\ndir /tmp\n") {
					err = fmt.Errorf("status: %q", st)
				}
				return err
			}
			if _, err := f.WriteString("exec sh -c 'echo out; echo err >&2'\n"); err != nil {
				return err
			}
			for name, want := range map[string]string{"data": "out\n", "stderr": "err\n"} {
				b, err := os.ReadFile(filepath.Join(conn, name))
				if err != nil || string(b) != want {
					return fmt.Errorf("%s: %q %v", name, b, err)
				}
			}
			w, err := os.ReadFile(filepath.Join(conn, "wait"))
			if err == nil && !strings.HasSuffix(string(w), " exit 0\n") {
				err = fmt.Errorf("wait: %q", w)
			}
			return err
		}, []string{"cmd"}},
		{"/M listing", n, list(s.Mnt), nil},
		{"bot dir listing", n, list(s.Path(bot)), nil},
		{"data/ file (read, or open read-write and close)", n, func(i int) error {
			if i%2 == 0 {
				_, err := os.ReadFile(p("data", "note"))
				return err
			}
			f, err := os.OpenFile(p("data", "note"), os.O_RDWR, 0)
			if err != nil {
				return err
			}
			return f.Close()
		}, []string{"data"}},
		{"data/ dir (open, readdir, close)", n, func(i int) error {
			f, err := os.Open(p("data"))
			if err != nil {
				return err
			}
			_, err = f.Readdirnames(-1)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			return err
		}, []string{"data"}},
		{"events (blocking reader woken by an event)", n, func(int) error {
			fd, err := unix.Open(p("events"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			if m, err := readRetry(fd, make([]byte, 1<<20), &eintr); err != nil || m == 0 {
				return fmt.Errorf("history: %d %v", m, err)
			}
			done := make(chan error, 1)
			go func() {
				m, err := readRetry(fd, make([]byte, 64<<10), &eintr)
				if err == nil && m == 0 {
					err = io.EOF
				}
				done <- err
			}()
			if err := s.Ctl(bot, "autostart off"); err != nil {
				return err
			}
			select {
			case err := <-done:
				return err
			case <-time.After(time.Minute):
				return errors.New("a waiting reader was not woken by a new event")
			}
		}, nil},
		{"events (blocking readers interrupted: cat killed by SIGINT, 4 at once)", n / 4, func(int) error {
			// A test started in the background by a shell without job
			// control (a CI runner, `make test &`) has SIGINT ignored,
			// and so would its cats: ^C would not reach them. While
			// Go handles SIGINT, a child starts with the default.
			sigint := make(chan os.Signal, 1)
			signal.Notify(sigint, syscall.SIGINT)
			defer signal.Stop(sigint)
			var cmds []*exec.Cmd
			defer func() {
				for _, c := range cmds {
					c.Process.Kill()
					c.Wait()
				}
			}()
			for range 4 {
				c := exec.Command("cat", p("events"))
				out, err := c.StdoutPipe()
				if err != nil {
					return err
				}
				if err := c.Start(); err != nil {
					return err
				}
				cmds = append(cmds, c)
				// cat writes the history, then waits in its next read.
				if _, err := out.Read(make([]byte, 1)); err != nil {
					return fmt.Errorf("cat events: %w", err)
				}
			}
			// Each one waiting in its read, on the daemon's answer (not
			// a time: a loaded machine takes longer to get there).
			for _, c := range cmds {
				wchan := fmt.Sprintf("/proc/%d/wchan", c.Process.Pid)
				deadline := time.Now().Add(time.Minute)
				for {
					if b, _ := os.ReadFile(wchan); strings.TrimSpace(string(b)) == "request_wait_answer" {
						break
					}
					if time.Now().After(deadline) {
						b, _ := os.ReadFile(wchan)
						return fmt.Errorf("cat events did not come to wait in its read (in %q)", b)
					}
					time.Sleep(time.Millisecond)
				}
			}
			for _, c := range cmds {
				c.Process.Signal(syscall.SIGINT)
			}
			for _, c := range cmds {
				var exit *exec.ExitError
				if err := testenv.WaitBounded(c, time.Minute); err == nil {
					return errors.New("cat events ended by itself")
				} else if !errors.As(err, &exit) {
					return fmt.Errorf("SIGINT: %w", err)
				}
			}
			cmds = nil
			return nil
		}, nil},
		{"snapshots/: mkdir a snapshot, read its data/ and rootfs/ views, rmdir it", count(5, 50), func(i int) error {
			name := "drop-" + strconv.Itoa(i)
			if err := os.Mkdir(p("snapshots", name), 0o755); err != nil {
				return err
			}
			for _, dir := range []string{"data", "rootfs"} {
				if _, err := os.ReadDir(p("snapshots", name, dir)); err != nil {
					return err
				}
			}
			if _, err := os.ReadFile(p("snapshots", name, "info")); err != nil {
				return err
			}
			return syscall.Rmdir(p("snapshots", name))
		}, nil},
		{"another bot's life: mkdir, snapshot, read its snapshot's data/ (and rootfs/ every other time), rmdir", count(4, 40), func(i int) error {
			name := "hyg-life-" + strconv.Itoa(i)
			if err := os.Mkdir(s.Path(name), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(s.Path(name, "data", "note"), []byte("x\n"), 0o644); err != nil {
				return err
			}
			if err := os.Mkdir(s.Path(name, "snapshots", "s1"), 0o755); err != nil {
				return err
			}
			views := []string{"data"}
			if i%2 == 0 {
				views = append(views, "rootfs")
			}
			for _, dir := range views {
				if _, err := os.ReadDir(s.Path(name, "snapshots", "s1", dir)); err != nil {
					return err
				}
			}
			if _, err := os.ReadFile(s.Path(name, "snapshots", "s1", "data", "note")); err != nil {
				return err
			}
			t0 := time.Now()
			err := syscall.Rmdir(s.Path(name))
			rmdirTook[len(views)-1] = append(rmdirTook[len(views)-1], time.Since(t0).Round(time.Millisecond))
			return err
		}, nil},
	}

	// Every entry of the bot's dir and of the snapshot's has its cycles,
	// perFile of them.
	covered := map[string]int{}
	for _, c := range cycles {
		for _, f := range c.files {
			covered[f] += c.n
		}
	}
	var entries []string
	for _, dir := range []string{"", "snapshots/" + snap} {
		ents, err := os.ReadDir(p(dir))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			entries = append(entries, filepath.Join(dir, e.Name()))
		}
	}
	for _, e := range entries {
		if e == "snapshots/"+snap {
			continue // the snapshot's dir: its entries are listed here
		}
		if covered[e] < n {
			t.Fatalf("%s has %d open/close cycles, want %d: every entry of a bot or snapshot dir gets them", e, covered[e], n)
		}
	}
	t.Logf("%d cycles or more of each of %v", n, entries)

	// Warm up: one round of everything (the rootfs view gets mounted,
	// trees open their base dirs, the watcher and the database pool get
	// going), then the baseline.
	for _, c := range cycles {
		for i := range min(c.n, 2) {
			if err := c.do(i); err != nil {
				t.Fatalf("warm-up %s: %v", c.name, err)
			}
		}
	}
	mountsBefore := append(testenv.MountsUnder(mntDir), testenv.MountsUnder(s.RuntimeConfig.StateDir)...)
	base := settledCensus(t, time.Minute)
	t.Logf("baseline: %v; go-fuse server goroutines may float up to %d", base, fuseMax())

	start := time.Now()
	leaked := false
	for _, c := range cycles {
		t0 := time.Now()
		for i := range c.n {
			if err := c.do(i); err != nil {
				t.Fatalf("%s, cycle %d: %v", c.name, i, err)
			}
		}
		took := time.Since(t0)
		after := takeCensus()
		back, g := backTo(base, 30*time.Second)
		if g != "" {
			leaked = true
			t.Errorf("%s: after %d cycles not back to the baseline within 30s: %v, baseline %v:\n%s", c.name, c.n, back, base, g)
			base = back // attribute what follows to its own file
			continue
		}
		t.Logf("%s: %d cycles in %v; right after: %v; back to baseline", c.name, c.n, took.Round(time.Millisecond), after)
		if g := after.grew(base); g != "" {
			t.Logf("    (passing, right after the cycles: %s)", g)
		}
	}
	t.Logf("all cycles: %v; %d reads of events were interrupted (EINTR) and retried", time.Since(start).Round(time.Millisecond), eintr.Load())

	final, g := backTo(base, 30*time.Second)
	if g != "" && !leaked {
		t.Errorf("not back to the baseline after all cycles: %v, baseline %v:\n%s", final, base, g)
	}
	t.Logf("after all cycles: %v (baseline %v)", final, base)
	t.Logf("rmdir of a bot whose snapshot's data/ view was read: %v; whose data/ and rootfs/ views were: %v", rmdirTook[0], rmdirTook[1])
	if final.total-final.fuse > base.total-base.fuse && !leaked {
		t.Errorf("goroutines other than go-fuse's: %d, baseline %d", final.total-final.fuse, base.total-base.fuse)
	}

	// No mounts stacked: 1,000 rootfs listings use the one view.
	mountsAfter := append(testenv.MountsUnder(mntDir), testenv.MountsUnder(s.RuntimeConfig.StateDir)...)
	if !slices.Equal(mountsBefore, mountsAfter) {
		t.Errorf("mounts under the test's dirs changed over the cycles: %v -> %v", mountsBefore, mountsAfter)
	}
	t.Logf("mounts under the test's dirs: %v", mountsAfter)
	if st := s.Status(bot); st.State != "running" {
		t.Errorf("the bot after the cycles: %s", st.State)
	}
}

// TestHygieneCountIsREADMEs: the count of open/close cycles README.md's
// hardness table gives TestHygiene is perFile, the count it runs.
func TestHygieneCountIsREADMEs(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var row string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "| `TestHygiene` |") {
			row = l
		}
	}
	m := regexp.MustCompile(`([0-9][0-9,]*) open/close cycles of every synthetic file`).FindStringSubmatch(row)
	if m == nil {
		t.Fatalf("README.md's TestHygiene row does not say how many open/close cycles of every synthetic file: %q", row)
	}
	if stated, _ := strconv.Atoi(strings.ReplaceAll(m[1], ",", "")); stated != perFile {
		t.Fatalf("README.md states %s open/close cycles of every synthetic file; TestHygiene runs %d", m[1], perFile)
	}
}
