package hardness

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/memohfs/memohfs/internal/creds"
	"golang.org/x/sys/unix"
)

// The race attacks of TestEscapes, made to really race and counted.
//
// The attacker is the bot: a goroutine of the test that changes a name N
// in the bot's data dir, on the host side of it (the dir the container
// has at /data: the bot can make exactly these system calls there, and
// memohfs sees the same inodes and the same inotify events), in a tight
// loop, far faster than a busybox loop in the container could. Each
// change is counted.
//
// The victim is root, or alice (a non-root user), making one system call
// on N through data/ (allow_other; the FUSE node, or with
// MEMOHFS_TEST_DATA_PATH=bind the bot's dir bound over it) on a thread
// of a creds.Pool switched to her fsuid, fsgid and groups: the kernel
// checks them, FUSE takes them from the thread and memohfs reads the
// groups from /proc/<tid>/status. The thread keeps its other
// capabilities (those a non-zero fsuid does not drop), which no check on
// this path consults.
//
// A window is hit when the attacker changed the name while the victim's
// system call was in flight: between the kernel's lookup of N and the
// action (memohfs's, through FUSE) N did not stay the same. Every attack
// runs until it hit its window enough times (or a bounded number of
// calls), and fails if it never hit it: an attack that cannot race proves
// nothing. How often a call's lookup reaches memohfs rather than the
// kernel's cache depends on how fast memohfs's watcher drops the entries
// the attacker changes; the outcomes logged show both objects were met.

// swapper is the bot's attacker: body runs in a loop on the host side of
// the bot's data dir until halt, and makes every change to the name
// under attack through mut, which counts it.
type swapper struct {
	dir     int           // the bot's host data dir
	begun   atomic.Uint64 // changes attempted
	changed atomic.Uint64 // the number of the last attempt that changed the name
	swaps   atomic.Uint64 // changes made
	stop    atomic.Bool
	done    chan struct{}

	mu   sync.Mutex
	errs []string // what the attacker saw go wrong (a hostile object changed)
}

// startSwapper starts body in a loop on hostDir; it is halted at the end
// of the test at the latest.
func startSwapper(t *testing.T, hostDir string, body func(x *swapper)) *swapper {
	t.Helper()
	fd, err := unix.Open(hostDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	must(t, err)
	x := &swapper{dir: fd, done: make(chan struct{})}
	go func() {
		defer close(x.done)
		for !x.stop.Load() {
			body(x)
			runtime.Gosched() // memohfs, on 2 cores, gets its turn
		}
	}()
	t.Cleanup(func() {
		x.halt()
		unix.Close(x.dir)
	})
	return x
}

// mut makes one change to the name under attack and counts it if it
// succeeded.
func (x *swapper) mut(fn func() error) error {
	n := x.begun.Add(1)
	err := fn()
	if err == nil {
		x.changed.Store(n) // one goroutine: only ever grows
		x.swaps.Add(1)
	}
	return err
}

// exchange swaps names a and b of the data dir (RENAME_EXCHANGE).
func (x *swapper) exchange(a, b string) error {
	return x.mut(func() error { return unix.Renameat2(x.dir, a, x.dir, b, unix.RENAME_EXCHANGE) })
}

// move renames a to b if b does not exist (RENAME_NOREPLACE).
func (x *swapper) move(a, b string) error {
	return x.mut(func() error { return unix.Renameat2(x.dir, a, x.dir, b, unix.RENAME_NOREPLACE) })
}

func (x *swapper) failf(format string, args ...any) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(x.errs) < 20 {
		x.errs = append(x.errs, fmt.Sprintf(format, args...))
	}
}

// halt stops the attacker, waits for it and returns how many changes it
// made.
func (x *swapper) halt() uint64 {
	x.stop.Store(true)
	<-x.done
	return x.swaps.Load()
}

// check fails t with what the attacker saw go wrong.
func (x *swapper) check(t *testing.T) {
	t.Helper()
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, e := range x.errs {
		t.Error(e)
	}
}

// xVictim is who makes the calls under attack.
type xVictim struct {
	who  string
	uid  uint32
	cred creds.Cred
}

func (v xVictim) root() bool { return v.uid == 0 }

var (
	xRoot  = xVictim{who: "root", cred: creds.Cred{Umask: 0o022}}
	xAlice = xVictim{who: "alice", uid: escAlice, cred: creds.Cred{Uid: escAlice, Gid: escAlice, Umask: 0o022}}
)

// xTally is what a victim's calls gave: how many, how many overlapped a
// change of the name, and each outcome.
type xTally struct {
	ops, hits int
	outcomes  map[string]int
}

func (c xTally) String() string {
	keys := make([]string, 0, len(c.outcomes))
	for k := range c.outcomes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %d", k, c.outcomes[k])
	}
	return b.String()
}

// xCall is one system call under attack: call makes it (the window is
// measured around it alone); after names its outcome, undoing a success
// if needed, on the same thread as the same user.
type xCall struct {
	name  string
	call  func(i int) (int, error)
	after func(i, fd int, err error) string
}

// xRace makes calls in turn as v until each of them overlapped a change
// by x want times, or max rounds were made, and tallies each.
func (e *escEnv) xRace(t *testing.T, x *swapper, v xVictim, want, max int, calls ...xCall) []xTally {
	t.Helper()
	tallies := make([]xTally, len(calls))
	for k := range tallies {
		tallies[k].outcomes = map[string]int{}
	}
	for i := 0; i < max; i++ {
		done := true
		for k, c := range calls {
			if tallies[k].hits >= want {
				continue
			}
			done = false
			var out string
			var hit bool
			err := e.pool.Run(v.cred, func() error {
				mark := x.begun.Load()
				fd, err := c.call(i)
				hit = x.changed.Load() > mark
				out = c.after(i, fd, err)
				return nil
			})
			if err != nil {
				t.Fatalf("%s: the victim's thread: %v", v.who, err)
			}
			tallies[k].ops++
			if hit {
				tallies[k].hits++
			}
			tallies[k].outcomes[out]++
		}
		if done {
			break
		}
	}
	return tallies
}

// xWant fails t unless the race hit its window, and every outcome is one
// of allowed.
func xWant(t *testing.T, what string, c xTally, swaps uint64, allowed ...string) {
	t.Helper()
	t.Logf("%s: %d of %d ops overlapped a swap (%d swaps); %s", what, c.hits, c.ops, swaps, c)
	if c.hits == 0 {
		t.Errorf("%s: no call overlapped a change of the name in %d calls: the attack never hit its window", what, c.ops)
	}
	ok := map[string]bool{}
	for _, a := range allowed {
		ok[a] = true
	}
	for o, n := range c.outcomes {
		if !ok[o] {
			t.Errorf("%s: %q %d times; allowed: %v", what, o, n, allowed)
		}
	}
}

// xOutcome names an error (its errno) or a success.
func xOutcome(err error) string {
	if err == nil {
		return "ok"
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		if n := unix.ErrnoName(en); n != "" {
			return n
		}
	}
	return err.Error()
}

// xFdOutcome names what an open gave: "ok reg", "ok dir", "ok fifo", and
// closes fd. A regular file must be the caller's own (or, for root, any)
// and read as one of contents; anything else is a "VIOLATION".
func xFdOutcome(fd int, v xVictim, read bool, contents ...string) string {
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "fstat " + xOutcome(err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "ok dir"
	case unix.S_IFIFO:
		return "ok fifo"
	case unix.S_IFREG:
	default:
		return fmt.Sprintf("VIOLATION: opened a %o", st.Mode&unix.S_IFMT)
	}
	if !v.root() && st.Uid != v.uid {
		return fmt.Sprintf("VIOLATION: %s opened a file of uid %d", v.who, st.Uid)
	}
	if read {
		buf := make([]byte, 64)
		n, err := unix.Read(fd, buf)
		if err != nil {
			return "read " + xOutcome(err)
		}
		got := string(buf[:n])
		for _, c := range contents {
			if got == c {
				return "ok reg"
			}
		}
		return fmt.Sprintf("VIOLATION: %s read %q", v.who, got)
	}
	return "ok reg"
}

// xCanary is a set of root-only files outside every data dir that the
// bot's symlinks point to, with its own fingerprint: atime included (the
// secret's atime is set older than its mtime, so any read moves it,
// relatime or not).
type xCanary struct {
	dir     string
	secret  string // root 0600 file
	sealed  string // root 0755 dir, empty
	through string // a name in sealed: a dangling link's target, never to exist
}

const xSecretText = "XCANARY-SECRET-ab12\n"

func (e *escEnv) newXCanary(t *testing.T) *xCanary {
	t.Helper()
	d := e.s.Env.TempDir(t)
	must(t, os.Chmod(d, 0o755))
	c := &xCanary{dir: d, secret: filepath.Join(d, "secret"), sealed: filepath.Join(d, "sealed")}
	c.through = filepath.Join(c.sealed, "through")
	escWrite(t, c.secret, xSecretText, 0o600)
	must(t, os.Mkdir(c.sealed, 0o755))
	// Control: a read does move an atime set older than the mtime.
	ctl := filepath.Join(d, "control")
	escWrite(t, ctl, "control\n", 0o600)
	for _, p := range []string{c.secret, ctl} {
		must(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{{Sec: 1}, {Nsec: unix.UTIME_OMIT}}, 0))
	}
	if _, err := os.ReadFile(ctl); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	must(t, unix.Stat(ctl, &st))
	if st.Atim.Sec == 1 {
		t.Fatalf("a read did not move the atime of %s: the canary's atime check would prove nothing", ctl)
	}
	must(t, os.Remove(ctl))
	return c
}

func (c *xCanary) fingerprint(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	filepath.WalkDir(c.dir, func(p string, d os.DirEntry, err error) error {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			fmt.Fprintf(&b, "%s: %v\n", p, err)
			return nil
		}
		fmt.Fprintf(&b, "%s mode=%o uid=%d gid=%d size=%d mtime=%d ctime=%d", p, st.Mode, st.Uid, st.Gid, st.Size,
			st.Mtim.Nano(), st.Ctim.Nano())
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			// The atime of files (this walk lists the dirs: theirs move).
			fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOATIME|unix.O_CLOEXEC, 0)
			buf := make([]byte, 4096)
			n := 0
			if err == nil {
				n, err = unix.Read(fd, buf)
				unix.Close(fd)
			}
			fmt.Fprintf(&b, " atime=%d sha=%x %v", st.Atim.Nano(), sha256.Sum256(buf[:max(n, 0)]), err)
		}
		b.WriteString("\n")
		return nil
	})
	return b.String()
}

// same fails t if the canaries changed since before (fingerprint), or
// anything was made through the dangling link.
func (c *xCanary) same(t *testing.T, what, before string) {
	t.Helper()
	if after := c.fingerprint(t); after != before {
		t.Errorf("%s: CANARY CHANGED (read, written or made in):\n\tbefore %q\n\tafter  %q", what, before, after)
	}
	if _, err := os.Lstat(c.through); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s: %s was made through the bot's dangling link: %v", what, c.through, err)
	}
}

// xKind is a hostile object the attacker swaps in at the name.
type xKind int

const (
	xFifoR    xKind = iota // the bot's fifo, with a reader in the bot counting opens for writing
	xFifoW                 // the bot's fifo, with a writer in the bot counting opens for reading
	xLink                  // a symlink to a root-only canary outside
	xDangling              // a symlink to a name outside that does not exist
	xRootFile              // a root-owned 0600 file
	xRootDir               // a root-owned 0755 directory
)

var xKindNames = [...]string{"fifo(r)", "fifo(w)", "symlink", "dangling symlink", "root file", "root dir"}

const (
	xRegText  = "regular\n" // the victim's own file at the name
	xRootText = "ROOTONL\n" // the root-owned file: as long as xRegText, so a truncate to its size keeps it
)

// xTarget is the attack on one name, for one victim: the name, the slots
// where the attacker keeps its hostile objects, and what they must look
// like at the end.
type xTarget struct {
	e      *escEnv
	host   string // the bot's host data dir
	name   string // N
	slots  []string
	kinds  []xKind
	fifoR  string // the fifos' and root file's kept names (in the data dir)
	fifoW  string
	root   string
	link   string // the symlink's target
	canary *xCanary

	spawned sync.Map // xID -> xKind, of every hostile object made
	// before is the state of the shared hostile objects at the start.
	before map[string]unix.Stat_t
}

// xID tells a file from one made later at the same inode number.
type xID struct {
	ino   uint64
	btime unix.StatxTimestamp
}

// xStat is statx of name in dir, not following it, and its identity.
func xStat(dir int, name string) (unix.Statx_t, xID, error) {
	var x unix.Statx_t
	err := unix.Statx(dir, name, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &x)
	return x, xID{x.Ino, x.Btime}, err
}

// spawn makes a hostile object of kind k at slot s (host side, as the
// bot).
func (xt *xTarget) spawn(x *swapper, s string, k xKind) error {
	var err error
	switch k {
	case xFifoR:
		err = unix.Linkat(x.dir, xt.fifoR, x.dir, s, 0)
	case xFifoW:
		err = unix.Linkat(x.dir, xt.fifoW, x.dir, s, 0)
	case xLink:
		err = unix.Symlinkat(xt.link, x.dir, s)
	case xDangling:
		err = unix.Symlinkat(xt.canary.through, x.dir, s)
	case xRootFile:
		err = unix.Linkat(x.dir, xt.root, x.dir, s, 0)
	case xRootDir:
		err = unix.Mkdirat(x.dir, s, 0o755)
	}
	if err != nil {
		return err
	}
	_, id, err := xStat(x.dir, s)
	if err != nil {
		return err
	}
	xt.spawned.Store(id, k)
	return nil
}

// hostile says whether slot s holds one of the attacker's objects, and
// checks it if so.
func (xt *xTarget) hostile(x *swapper, v xVictim, s string) (exists, ours bool) {
	st, id, err := xStat(x.dir, s)
	if err != nil {
		return false, false
	}
	k, ok := xt.spawned.Load(id)
	if ok {
		xt.checkHostile(x, v, s, k.(xKind), &st)
	}
	return true, ok
}

// swapLoop is the attacker on a name that always holds the victim's
// object: it exchanges it with each hostile object in turn, twice (in and
// out again).
func (xt *xTarget) swapLoop(x *swapper) {
	for _, s := range xt.slots {
		for range 2 {
			if err := x.exchange(xt.name, s); err != nil {
				x.failf("exchange %s %s: %v", xt.name, s, err)
				x.stop.Store(true)
				return
			}
		}
	}
}

// plantLoop is the attacker on a name the victim makes (and removes
// again): each hostile object in turn is moved in at the empty name, or
// exchanged with what the victim just made there, and moved out again,
// leaving the name empty; what the victim made is thrown away, and a
// hostile object the victim removed is made again.
func (xt *xTarget) plantLoop(v xVictim) func(x *swapper) {
	return func(x *swapper) {
		for k, s := range xt.slots {
			if x.stop.Load() {
				return
			}
			if x.move(s, xt.name) != nil {
				x.exchange(xt.name, s)
			}
			if exists, ours := xt.hostile(x, v, s); exists && !ours {
				xRemove(x.dir, s) // what the victim made
			}
			x.move(xt.name, s)
			if exists, ours := xt.hostile(x, v, s); exists && !ours {
				xRemove(x.dir, s)
			} else if ours {
				continue
			}
			if err := xt.spawn(x, s, xt.kinds[k]); err != nil {
				x.failf("spawn %s at %s: %v", xKindNames[xt.kinds[k]], s, err)
			}
		}
	}
}

// xRemove removes name in dir, a file or an empty directory.
func xRemove(dir int, name string) {
	if unix.Unlinkat(dir, name, 0) != nil {
		unix.Unlinkat(dir, name, unix.AT_REMOVEDIR)
	}
}

// checkHostile: nobody chowned a hostile object, and a non-root victim
// changed none of their modes.
func (xt *xTarget) checkHostile(x *swapper, v xVictim, s string, k xKind, st *unix.Statx_t) {
	if st.Uid != 0 || st.Gid != 0 {
		x.failf("the bot's %s (at %s) was chowned to %d:%d", xKindNames[k], s, st.Uid, st.Gid)
	}
	want := map[xKind]uint16{xLink: 0o777, xDangling: 0o777, xRootDir: 0o755}
	if m, ok := want[k]; ok && !v.root() && st.Mode&0o7777 != m {
		x.failf("the bot's %s (at %s) has mode %o, want %o", xKindNames[k], s, st.Mode&0o7777, m)
	}
}

// newXTarget sets up the attack on name for victim v: the kept fifos and
// root file, and the slots with one hostile object of each kind.
func (e *escEnv) newXTarget(t *testing.T, name string, v xVictim, c *xCanary, link string, kinds []xKind, fifoR, fifoW string) *xTarget {
	t.Helper()
	host := e.s.HostData(e.a)
	xt := &xTarget{e: e, host: host, name: name, kinds: kinds, fifoR: "." + fifoR, fifoW: "." + fifoW,
		root: "." + name + ".root", link: link, canary: c}
	escWrite(t, filepath.Join(host, xt.root), xRootText, 0o600)
	fd, err := unix.Open(host, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	must(t, err)
	defer unix.Close(fd)
	x := &swapper{dir: fd}
	for i, k := range kinds {
		s := fmt.Sprintf("%s.h%d", name, i)
		xt.slots = append(xt.slots, s)
		must(t, xt.spawn(x, s, k))
	}
	xt.before = map[string]unix.Stat_t{}
	for _, n := range []string{xt.fifoR, xt.fifoW, xt.root} {
		var st unix.Stat_t
		must(t, unix.Lstat(filepath.Join(host, n), &st))
		xt.before[n] = st
	}
	t.Cleanup(func() {
		for _, n := range append([]string{name, xt.root}, xt.slots...) {
			os.RemoveAll(filepath.Join(host, n))
		}
	})
	return xt
}

// checkShared: the fifos were never opened on the host but by the
// victim's own opens (writes: its opens for writing, reads: for reading)
// and nobody chowned them; the root-owned file is as it was (mode, owner,
// size, content, mtime) unless root was the victim, the fifos' modes too
// (a fifo's mtime moves when the bot writes to it); the hostile objects
// still in their slots are unchanged.
func (xt *xTarget) checkShared(t *testing.T, x *swapper, v xVictim, what string, writes, reads int) {
	t.Helper()
	e := xt.e
	e.fifoUntouched(t, e.a, strings.TrimPrefix(xt.fifoR, "."), writes)
	e.fifoUntouched(t, e.a, strings.TrimPrefix(xt.fifoW, "."), reads)
	for n, b := range xt.before {
		var st unix.Stat_t
		must(t, unix.Lstat(filepath.Join(xt.host, n), &st))
		if st.Uid != b.Uid || st.Gid != b.Gid {
			t.Errorf("%s: the bot's %s was chowned to %d:%d", what, n, st.Uid, st.Gid)
		}
		if n != xt.root {
			st.Size, st.Mtim = b.Size, b.Mtim
		}
		if !v.root() && (st.Mode != b.Mode || st.Size != b.Size || st.Mtim != b.Mtim) {
			t.Errorf("%s: %s changed %s: mode %o size %d mtime %v, was %o %d %v", what, v.who, n, st.Mode, st.Size, st.Mtim, b.Mode, b.Size, b.Mtim)
		}
	}
	if !v.root() {
		escWantFile(t, filepath.Join(xt.host, xt.root), xRootText)
	}
	for _, s := range xt.slots {
		xt.hostile(x, v, s)
	}
	x.check(t)
}

// xOp is one operation under attack.
type xOp struct {
	name string
	// makes: the operation makes the name; the attacker plants its objects
	// at the empty name (else the name holds the victim's own object, the
	// file xRegText or, dirAt, a directory, and the attacker exchanges it).
	makes, dirAt bool
	// kinds of hostile objects (default: all).
	kinds []xKind
	// link is the target of the attacker's symlink for v (default: the
	// canary secret).
	link func(c *xCanary, v xVictim) string
	// call is the system call under attack, on p (N through data/).
	call func(v xVictim, p string, i int) (int, error)
	// after names call's outcome and undoes a success, as v.
	after func(v xVictim, p string, i, fd int, err error) string
	// allowed are the outcomes allowed for v.
	allowed func(v xVictim) []string
	// follows: the kernel walks through N, following a link, for v: on a
	// nosymfollow mount a link there answers ELOOP.
	follows func(v xVictim) bool
	// opensFifo is how call opens a fifo at N ("write", "read"), if it
	// does: through a bind, the victim's own open reaches the bot's fifo,
	// as on a local disk ("ok fifo", nonblocking, when the bot's other
	// end is there).
	opensFifo string
}

func xUser(v xVictim) bool { return !v.root() }
func xAnyone(xVictim) bool { return true }

// Root opens with O_NOFOLLOW: a symlink the kernel follows for root is
// root's own business (root may open the canary on any disk); what is
// under attack is what memohfs does, and that is the same with it.
func xNoFollow(v xVictim) int {
	if v.root() {
		return unix.O_NOFOLLOW
	}
	return 0
}

// The operations under exchange attack, and what each may answer. ESTALE
// (the name no longer holds the file the kernel asked about) is allowed
// where memohfs may answer it. On a nosymfollow mount (with
// --data-binds) a link the kernel walks through (follows) answers ELOOP,
// whatever it points to.
var xOps = []xOp{
	{
		name: "create", makes: true, opensFifo: "write",
		call: func(v xVictim, p string, i int) (int, error) {
			return unix.Open(p, unix.O_WRONLY|unix.O_CREAT|unix.O_NONBLOCK|unix.O_CLOEXEC|xNoFollow(v), 0o644)
		},
		after: func(v xVictim, p string, i, fd int, err error) string {
			if err != nil {
				return xOutcome(err)
			}
			out := xFdOutcome(fd, v, false)
			unix.Unlink(p)
			return out
		},
		follows: xUser,
		// alice: the root file and the links (followed by the kernel for
		// her) EACCES, a fifo ENXIO (nobody reads the mount's own fifo),
		// a dir EISDIR; root: the links ELOOP.
		allowed: func(v xVictim) []string {
			if v.root() {
				return []string{"ok reg", "ELOOP", "ENXIO", "EISDIR", "ESTALE"}
			}
			return []string{"ok reg", "EACCES", "ENXIO", "EISDIR", "ESTALE"}
		},
	},
	{
		name: "create-excl", makes: true,
		call: func(v xVictim, p string, i int) (int, error) {
			return unix.Open(p, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o644)
		},
		after: func(v xVictim, p string, i, fd int, err error) string {
			if err != nil {
				return xOutcome(err)
			}
			var st unix.Stat_t
			unix.Fstat(fd, &st)
			out := xFdOutcome(fd, v, false)
			if out == "ok reg" && (st.Uid != v.uid || st.Size != 0) {
				out = fmt.Sprintf("VIOLATION: O_EXCL gave a file of uid %d size %d", st.Uid, st.Size)
			}
			unix.Unlink(p)
			return out
		},
		allowed: func(v xVictim) []string { return []string{"ok reg", "EEXIST"} },
	},
	{
		name: "mkdir", makes: true,
		call: func(v xVictim, p string, i int) (int, error) { return -1, unix.Mkdir(p, 0o755) },
		after: func(v xVictim, p string, i, fd int, err error) string {
			if err == nil {
				unix.Rmdir(p)
			}
			return xOutcome(err)
		},
		allowed: func(v xVictim) []string { return []string{"ok", "EEXIST"} },
	},
	{
		name: "symlink", makes: true,
		call: func(v xVictim, p string, i int) (int, error) { return -1, unix.Symlink("victims-link", p) },
		after: func(v xVictim, p string, i, fd int, err error) string {
			if err == nil {
				unix.Unlink(p)
			}
			return xOutcome(err)
		},
		allowed: func(v xVictim) []string { return []string{"ok", "EEXIST"} },
	},
	{
		// mkdir N/x, N a directory of the victim's: the kernel walks N
		// (following a symlink), memohfs makes x in what it found. No
		// dangling link here: ENOENT means the victim's own directory was
		// refused.
		name: "mkdir-in", dirAt: true, follows: xAnyone,
		kinds: []xKind{xFifoR, xFifoW, xLink, xRootFile, xRootDir},
		link: func(c *xCanary, v xVictim) string {
			if v.root() {
				return c.secret // root would make x in a directory it follows to: a file, refused
			}
			return c.sealed
		},
		call: func(v xVictim, p string, i int) (int, error) {
			return -1, unix.Mkdir(filepath.Join(p, fmt.Sprintf("x%d", i)), 0o755)
		},
		after: func(v xVictim, p string, i, fd int, err error) string {
			if err == nil {
				unix.Rmdir(filepath.Join(p, fmt.Sprintf("x%d", i)))
			}
			return xOutcome(err)
		},
		// alice: the canary dir and the root dir EACCES; root may make x
		// in the root dir.
		allowed: func(v xVictim) []string {
			if v.root() {
				return []string{"ok", "ENOTDIR"}
			}
			return []string{"ok", "EACCES", "ENOTDIR"}
		},
	},
	{
		name: "chmod",
		call: func(v xVictim, p string, i int) (int, error) {
			mode := uint32(0o640 + 4*(i%2))
			if v.root() {
				return -1, unix.Fchmodat(unix.AT_FDCWD, p, mode, unix.AT_SYMLINK_NOFOLLOW)
			}
			return -1, unix.Chmod(p, mode)
		},
		after:   func(v xVictim, p string, i, fd int, err error) string { return xOutcome(err) },
		follows: xUser,
		// alice: what is root's EPERM (the link followed to the canary
		// too), the dangling link ENOENT; root, not following:
		// EOPNOTSUPP (ENOTSUP) on a link.
		allowed: func(v xVictim) []string {
			if v.root() {
				return []string{"ok", "ENOTSUP", "ESTALE"}
			}
			return []string{"ok", "EPERM", "ENOENT", "ESTALE"}
		},
	},
	{
		name: "truncate",
		link: func(c *xCanary, v xVictim) string {
			if v.root() {
				return c.sealed // truncate(2) follows: for root, a link to a directory
			}
			return c.secret
		},
		follows: xAnyone,
		call:    func(v xVictim, p string, i int) (int, error) { return -1, unix.Truncate(p, int64(len(xRegText))) },
		after:   func(v xVictim, p string, i, fd int, err error) string { return xOutcome(err) },
		// a fifo EINVAL and a dir EISDIR (the kernel's checks before any
		// permission), the dangling link ENOENT; alice: the root file and
		// the canary EACCES.
		allowed: func(v xVictim) []string {
			if v.root() {
				return []string{"ok", "EINVAL", "EISDIR", "ENOENT", "ESTALE"}
			}
			return []string{"ok", "EINVAL", "EISDIR", "ENOENT", "EACCES", "ESTALE"}
		},
	},
	{
		name: "open-read", follows: xUser, opensFifo: "read",
		call: func(v xVictim, p string, i int) (int, error) {
			return unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|xNoFollow(v), 0)
		},
		after: func(v xVictim, p string, i, fd int, err error) string {
			if err != nil {
				return xOutcome(err)
			}
			if v.root() {
				return xFdOutcome(fd, v, true, xRegText, xRootText)
			}
			return xFdOutcome(fd, v, true, xRegText)
		},
		// A fifo opens as the mount's own (never the bot's), a dir as a
		// dir; alice: the root file and the canary EACCES, the dangling
		// link ENOENT; root: the links ELOOP.
		allowed: func(v xVictim) []string {
			if v.root() {
				return []string{"ok reg", "ok fifo", "ok dir", "ELOOP", "ESTALE"}
			}
			return []string{"ok reg", "ok fifo", "ok dir", "EACCES", "ENOENT", "ESTALE"}
		},
	},
	{
		name: "open-write", follows: xUser, opensFifo: "write",
		call: func(v xVictim, p string, i int) (int, error) {
			return unix.Open(p, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|xNoFollow(v), 0)
		},
		after: func(v xVictim, p string, i, fd int, err error) string {
			if err != nil {
				return xOutcome(err)
			}
			return xFdOutcome(fd, v, false)
		},
		allowed: func(v xVictim) []string {
			if v.root() {
				return []string{"ok reg", "ENXIO", "EISDIR", "ELOOP", "ESTALE"}
			}
			return []string{"ok reg", "ENXIO", "EISDIR", "EACCES", "ENOENT", "ESTALE"}
		},
	},
}

const (
	xWantHits = 200    // an attack stops once this many of its calls overlapped a change
	xMaxOps   = 100000 // or after this many calls (cheap: a call that takes long hits its window often)
)

// escExchange is the attack of the operation named opName by the bot
// swapping the name with RENAME_EXCHANGE, against root and alice in turn.
func escExchange(opName string) func(t *testing.T, e *escEnv) {
	return func(t *testing.T, e *escEnv) {
		var op xOp
		for _, o := range xOps {
			if o.name == opName {
				op = o
			}
		}
		if op.call == nil {
			t.Fatalf("no operation %q", opName)
		}
		fifoR, fifoW := "Fx-"+op.name, "Fxw-"+op.name
		e.fifoReader(t, e.a, fifoR)
		e.fifoWriter(t, e.a, fifoW)
		fifoWrites, fifoReads := 0, 0 // the victims' own opens of the bot's fifos
		kinds := op.kinds
		if kinds == nil {
			kinds = []xKind{xFifoR, xFifoW, xLink, xDangling, xRootFile, xRootDir}
		}
		for _, v := range []xVictim{xRoot, xAlice} {
			what := op.name + "/" + v.who
			c := e.newXCanary(t)
			link := c.secret
			if op.link != nil {
				link = op.link(c, v)
			}
			name := "x-" + op.name + "-" + v.who
			xt := e.newXTarget(t, name, v, c, link, kinds, fifoR, fifoW)
			host := filepath.Join(xt.host, name)
			switch {
			case op.makes:
			case op.dirAt:
				must(t, os.Mkdir(host, 0o755))
				must(t, os.Chown(host, escAlice, escAlice))
			default:
				escWrite(t, host, xRegText, 0o644)
				must(t, os.Chown(host, escAlice, escAlice))
			}
			before := c.fingerprint(t)
			loop := xt.swapLoop
			if op.makes {
				loop = xt.plantLoop(v)
			}
			e.settle(t, e.a)
			x := startSwapper(t, xt.host, loop)
			p := e.data(e.a, name)
			tally := e.xRace(t, x, v, xWantHits, xMaxOps, xCall{op.name,
				func(i int) (int, error) { return op.call(v, p, i) },
				func(i, fd int, err error) string { return op.after(v, p, i, fd, err) }})
			swaps := x.halt()
			allowed := op.allowed(v)
			if e.nosym && op.follows != nil && op.follows(v) {
				allowed = append(allowed, "ELOOP")
			}
			if e.binds && op.opensFifo == "write" {
				allowed = append(allowed, "ok fifo")
			}
			xWant(t, what, tally[0], swaps, allowed...)
			switch op.opensFifo {
			case "write":
				fifoWrites += tally[0].outcomes["ok fifo"]
			case "read":
				fifoReads += tally[0].outcomes["ok fifo"]
			}
			xt.checkShared(t, x, v, what, fifoWrites, fifoReads)
			c.same(t, what, before)
			if op.dirAt && !v.root() {
				// alice made nothing in the root dir.
				for _, s := range xt.slots {
					if ents, err := os.ReadDir(filepath.Join(xt.host, s)); err == nil && len(ents) > 0 {
						t.Errorf("%s: alice made %s in the bot's root-owned %s", what, ents[0].Name(), s)
					}
				}
			}
			if !op.makes {
				// The victim's own object is still at one of the names,
				// unchanged.
				xWantOwn(t, xt, op.dirAt)
			}
		}
	}
}

// xWantOwn: the victim's own object (alice's file or dir) survived the
// attack, at the name or in a slot, with its content.
func xWantOwn(t *testing.T, xt *xTarget, dir bool) {
	t.Helper()
	for _, n := range append([]string{xt.name}, xt.slots...) {
		var st unix.Stat_t
		p := filepath.Join(xt.host, n)
		if unix.Lstat(p, &st) != nil || st.Uid != escAlice {
			continue
		}
		if dir {
			return
		}
		if b, err := os.ReadFile(p); err != nil || !bytes.Equal(b, []byte(xRegText)) {
			t.Errorf("the victim's file %s: %q %v, want %q", n, b, err, xRegText)
		}
		return
	}
	t.Errorf("the victim's own object is gone from %s and its slots", xt.name)
}
