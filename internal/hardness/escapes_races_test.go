package hardness

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Attacks of TestEscapes (escapes_harness_test.go): races, the bot
// swapping a name for a symlink or a fifo while memohfs, or a user
// through it, works on it.
//
// The race attacks below are the bot's loops of old, made from the host
// side of its data dir by a swapper (see exchange_test.go): the same
// system calls, far more often, each change of the name counted. The
// victim's calls run in-process as alice or root; each call overlapping
// a change is a window hit, and an attack whose calls never overlapped
// one fails.

const (
	escRaceWant = 100    // a race stops once each of its calls overlapped a change this often
	escRaceMax  = 100000 // or after this many rounds (cheap: a call that takes long hits its window often)
)

// settle waits until memohfs's watcher has handled what was changed in
// bot's data dir so far (a race starts from a kernel cache that follows
// the host, not from a backlog of the last attack's changes): a marker
// file, its attributes cached through data/, grows on the host; once a
// stat through data/ shows its new size, the watcher is past every
// earlier event (or dropped the caches after losing them).
func (e *escEnv) settle(t *testing.T, bot string) {
	t.Helper()
	e.settled++
	p, h := e.data(bot, ".settle"), filepath.Join(e.s.HostData(bot), ".settle")
	if e.settled == 1 {
		must(t, os.WriteFile(h, nil, 0o644))
		waitFor(t, time.Minute, "the marker seen", func() bool { _, err := os.Lstat(p); return err == nil })
	}
	must(t, os.Truncate(h, int64(e.settled)))
	waitFor(t, 5*time.Minute, "the watcher is past the changes made so far", func() bool {
		fi, err := os.Lstat(p)
		return err == nil && fi.Size() == int64(e.settled)
	})
}

// escPut writes a file of the bot's in dir (create, truncate), with mode
// and owner.
func escPut(dir int, name, content string, mode uint32, uid int) {
	fd, err := unix.Openat(dir, name, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return
	}
	unix.Write(fd, []byte(content))
	unix.Fchown(fd, uid, uid)
	unix.Fchmod(fd, mode)
	unix.Close(fd)
}

// escRemove removes names in dir (the bot cleaning up after a race).
func escRemove(dir string, names ...string) {
	for _, n := range names {
		os.RemoveAll(filepath.Join(dir, n))
	}
}

// escRename renames a to b in dir (over b), as the bot's mv -f.
func escRename(x *swapper, a, b string) error {
	return x.mut(func() error { return unix.Renameat(x.dir, a, x.dir, b) })
}

// escOpenCall opens p with flags (0644 if it creates) as the call under
// attack.
func escOpenCall(p string, flags int) func(int) (int, error) {
	return func(int) (int, error) { return unix.Open(p, flags|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o644) }
}

// escFdAfter names an open's outcome: "ok" having read (any content but
// a canary's) or written data through the fd, or the errno.
func escFdAfter(read bool, data string) func(int, int, error) string {
	return func(_, fd int, err error) string {
		if err != nil {
			return xOutcome(err)
		}
		defer unix.Close(fd)
		if read {
			buf := make([]byte, 4096)
			n, err := unix.Read(fd, buf)
			if err != nil {
				return "read " + xOutcome(err)
			}
			if bytes.Contains(buf[:n], []byte("CANARY")) {
				return fmt.Sprintf("VIOLATION: read %q", buf[:n])
			}
			return "ok"
		}
		if _, err := unix.Write(fd, []byte(data)); err != nil {
			return "write " + xOutcome(err)
		}
		return "ok"
	}
}

func escErrAfter(_, _ int, err error) string { return xOutcome(err) }

// escWantRace fails t unless each call's race hit its window, and every
// outcome is one of the call's allowed.
func escWantRace(t *testing.T, calls []xCall, tallies []xTally, swaps uint64, allowed map[string][]string) {
	t.Helper()
	for k, c := range calls {
		xWant(t, c.name, tallies[k], swaps, allowed[c.name]...)
	}
}

func escRaceFileSwap(t *testing.T, e *escEnv) {
	host := e.s.HostData(e.a)
	escWrite(t, filepath.Join(host, "sw"), "ok\n", 0o666)
	// echo ok > sw.t; chmod 666 sw.t; mv -f sw.t sw; ln -s SECRET sw.l; mv -f sw.l sw
	e.settle(t, e.a)
	x := startSwapper(t, host, func(x *swapper) {
		escPut(x.dir, "sw.t", "ok\n", 0o666, 0)
		escRename(x, "sw.t", "sw")
		unix.Symlinkat(e.secret, x.dir, "sw.l")
		runtime.Gosched()
		escRename(x, "sw.l", "sw")
	})
	p := e.data(e.a, "sw")
	calls := []xCall{
		{"read", escOpenCall(p, unix.O_RDONLY), escFdAfter(true, "")},
		{"append", escOpenCall(p, unix.O_WRONLY|unix.O_APPEND), escFdAfter(false, "PWN\n")},
		{"write", escOpenCall(p, unix.O_WRONLY|unix.O_TRUNC), escFdAfter(false, "ok\n")},
	}
	tallies := e.xRace(t, x, xAlice, escRaceWant, escRaceMax, calls...)
	// The link to the root-only canary is followed by the kernel for
	// alice: EACCES (ELOOP: nosymfollow).
	l := e.linkOutcome("EACCES")
	escWantRace(t, calls, tallies, x.halt(), map[string][]string{
		"read": {"ok", l}, "append": {"ok", l}, "write": {"ok", l},
	})
}

func escRaceDirSwap(t *testing.T, e *escEnv) {
	e.sh(t, e.a, "mkdir /data/swd && echo ok > /data/swd/keep && chmod 777 /data/swd")
	t.Cleanup(func() { escRemove(e.s.HostData(e.a), "swd", "swd.x") }) // the watcher watches fewer dirs
	// mv swd swd.x; ln -s SEALED swd; rm swd; mv swd.x swd
	e.settle(t, e.a)
	x := startSwapper(t, e.s.HostData(e.a), func(x *swapper) {
		escRename(x, "swd", "swd.x")
		x.mut(func() error { return unix.Symlinkat(e.sealed, x.dir, "swd") })
		runtime.Gosched()
		x.mut(func() error { return unix.Unlinkat(x.dir, "swd", 0) })
		escRename(x, "swd.x", "swd")
	})
	d := e.data(e.a, "swd")
	calls := []xCall{
		{"create", func(i int) (int, error) {
			return escOpenCall(d+"/a"+itoa(i), unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC)(i)
		}, escFdAfter(false, "PWN\n")},
		{"mkdir", func(i int) (int, error) { return -1, unix.Mkdir(d+"/m"+itoa(i), 0o755) }, escErrAfter},
		{"read", escOpenCall(d+"/keep", unix.O_RDONLY), escFdAfter(true, "")},
	}
	tallies := e.xRace(t, x, xAlice, escRaceWant, escRaceMax, calls...)
	// The canary dir is root's 0755 (its keep 0600): EACCES (ELOOP:
	// nosymfollow); between the steps the name is missing: ENOENT.
	l := e.linkOutcome("EACCES")
	escWantRace(t, calls, tallies, x.halt(), map[string][]string{
		"create": {"ok", l, "ENOENT"}, "mkdir": {"ok", l, "ENOENT"}, "read": {"ok", l, "ENOENT"},
	})
}

// Root holds the directory open; the bot swaps it for a symlink to a
// canary dir. Calls through the held fd act on the directory held, as on
// any disk: they succeed, and never reach the canary.
func escRaceHeldDir(t *testing.T, e *escEnv) {
	e.sh(t, e.a, "mkdir /data/hd")
	t.Cleanup(func() { escRemove(e.s.HostData(e.a), "hd", "hd.x") })
	dfd, err := unix.Open(e.data(e.a, "hd"), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	must(t, err)
	defer unix.Close(dfd)
	// mv hd hd.x; ln -s SEALED hd; rm hd; mv hd.x hd
	e.settle(t, e.a)
	x := startSwapper(t, e.s.HostData(e.a), func(x *swapper) {
		escRename(x, "hd", "hd.x")
		x.mut(func() error { return unix.Symlinkat(e.sealed, x.dir, "hd") })
		x.mut(func() error { return unix.Unlinkat(x.dir, "hd", 0) })
		escRename(x, "hd.x", "hd")
	})
	calls := []xCall{
		{"create", func(i int) (int, error) {
			return unix.Openat(dfd, "r"+itoa(i), unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
		}, func(_, fd int, err error) string {
			if err == nil {
				unix.Close(fd)
			}
			return xOutcome(err)
		}},
		{"mkdir", func(i int) (int, error) { return -1, unix.Mkdirat(dfd, "rd"+itoa(i), 0o755) }, escErrAfter},
		{"fchmodat keep", func(int) (int, error) { return -1, unix.Fchmodat(dfd, "keep", 0o666, 0) }, escErrAfter},
		{"fstatat keep", func(int) (int, error) {
			var st unix.Stat_t
			return -1, unix.Fstatat(dfd, "keep", &st, unix.AT_SYMLINK_NOFOLLOW)
		}, escErrAfter},
	}
	tallies := e.xRace(t, x, xRoot, escRaceWant, escRaceMax, calls...)
	// keep is in the canary dir, not in hd: ENOENT, always.
	escWantRace(t, calls, tallies, x.halt(), map[string][]string{
		"create": {"ok"}, "mkdir": {"ok"}, "fchmodat keep": {"ENOENT"}, "fstatat keep": {"ENOENT"},
	})
}

func escRaceSetattr(t *testing.T, e *escEnv) {
	host := e.s.HostData(e.a)
	escPut(unix.AT_FDCWD, filepath.Join(host, "xf"), "x\n", 0o666, escAlice)
	// echo x > xf.t; chown alice xf.t; chmod 666 xf.t; mv -f xf.t xf; ln -s PUB xf.l; mv -f xf.l xf
	e.settle(t, e.a)
	x := startSwapper(t, host, func(x *swapper) {
		escPut(x.dir, "xf.t", "x\n", 0o666, escAlice)
		escRename(x, "xf.t", "xf")
		unix.Symlinkat(e.pub, x.dir, "xf.l")
		runtime.Gosched()
		escRename(x, "xf.l", "xf")
	})
	p := e.data(e.a, "xf")
	calls := []xCall{
		{"chmod", func(int) (int, error) { return -1, unix.Chmod(p, 0o600) }, escErrAfter},
		{"utime", func(int) (int, error) {
			return -1, unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{{Sec: 1}, {Sec: 1}}, 0)
		}, escErrAfter},
		{"trunc", func(int) (int, error) { return -1, unix.Truncate(p, 0) }, escErrAfter},
		{"setxattr", func(int) (int, error) { return -1, unix.Setxattr(p, "user.pwn", []byte("1"), 0) }, escErrAfter},
	}
	tallies := e.xRace(t, x, xAlice, escRaceWant, escRaceMax, calls...)
	// Through the link, the canary (root's 0644) is not alice's: chmod and
	// setting times EPERM, truncate and xattrs EACCES (all ELOOP:
	// nosymfollow).
	escWantRace(t, calls, tallies, x.halt(), map[string][]string{
		"chmod": {"ok", e.linkOutcome("EPERM")}, "utime": {"ok", e.linkOutcome("EPERM")},
		"trunc": {"ok", e.linkOutcome("EACCES")}, "setxattr": {"ok", e.linkOutcome("EACCES")},
	})
}

// memohfs must never open a fifo (or device) the bot makes: a reader in
// the bot counts every open of its fifo for write. A create that finds a
// fifo planted at its name (between the kernel's lookup and memohfs's
// openat) must not open it, nor chown it to the caller.
func escRaceCreate(t *testing.T, e *escEnv) {
	e.fifoReader(t, e.a, "F")
	// ln .F cr; rm -f cr; ln -s SECRET cr; rm -f cr
	e.settle(t, e.a)
	x := startSwapper(t, e.s.HostData(e.a), func(x *swapper) {
		x.mut(func() error { return unix.Linkat(x.dir, ".F", x.dir, "cr", 0) })
		runtime.Gosched()
		x.mut(func() error { return unix.Unlinkat(x.dir, "cr", 0) })
		runtime.Gosched()
		x.mut(func() error { return unix.Symlinkat(e.secret, x.dir, "cr") })
		runtime.Gosched()
		x.mut(func() error { return unix.Unlinkat(x.dir, "cr", 0) })
	})
	p := e.data(e.a, "cr")
	calls := []xCall{{"create", escOpenCall(p, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC), func(i, fd int, err error) string {
		if err != nil {
			return xOutcome(err)
		}
		out := xFdOutcome(fd, xAlice, false)
		unix.Unlink(p)
		return out
	}}}
	tallies := e.xRace(t, x, xAlice, escRaceWant, escRaceMax, calls...)
	// The fifo opens as the mount's own, which nobody reads: ENXIO; the
	// link is followed by the kernel for alice: EACCES (ELOOP:
	// nosymfollow); a name CREATE found taken twice: ESTALE.
	// Through a bind the fifo is the bot's own, with its reader: alice's
	// nonblocking open of it for writing succeeds, as on a local disk.
	allowed := []string{"ok reg", "ENXIO", e.linkOutcome("EACCES"), "ESTALE"}
	if e.binds {
		allowed = append(allowed, "ok fifo")
	}
	escWantRace(t, calls, tallies, x.halt(), map[string][]string{"create": allowed})
	e.fifoUntouched(t, e.a, "F", tallies[0].outcomes["ok fifo"])
}

func escRaceTruncate(t *testing.T, e *escEnv) {
	e.fifoReader(t, e.a, "F2")
	host := e.s.HostData(e.a)
	escPut(unix.AT_FDCWD, filepath.Join(host, "tr"), "x\n", 0o666, escAlice)
	// echo x > tr.t; chown alice tr.t; chmod 666 tr.t; mv -f tr.t tr; ln -f .F2 tr.f; mv -f tr.f tr
	e.settle(t, e.a)
	x := startSwapper(t, host, func(x *swapper) {
		escPut(x.dir, "tr.t", "x\n", 0o666, escAlice)
		escRename(x, "tr.t", "tr")
		unix.Unlinkat(x.dir, "tr.f", 0)
		unix.Linkat(x.dir, ".F2", x.dir, "tr.f", 0)
		runtime.Gosched()
		escRename(x, "tr.f", "tr")
	})
	p := e.data(e.a, "tr")
	calls := []xCall{
		{"trunc", func(int) (int, error) { return -1, unix.Truncate(p, 0) }, escErrAfter},
		{"chmod", func(int) (int, error) { return -1, unix.Chmod(p, 0o644) }, escErrAfter},
	}
	tallies := e.xRace(t, x, xAlice, escRaceWant, escRaceMax, calls...)
	// truncate(2) of a fifo is EINVAL; the fifo is root's: chmod EPERM.
	escWantRace(t, calls, tallies, x.halt(), map[string][]string{"trunc": {"ok", "EINVAL"}, "chmod": {"ok", "EPERM"}})
	e.fifoUntouched(t, e.a, "F2", 0)
	var st unix.Stat_t
	must(t, unix.Lstat(filepath.Join(host, ".F2"), &st))
	if st.Mode&0o7777 != 0o666 {
		t.Errorf("the bot's fifo has mode %o, want 666: alice's chmod reached it", st.Mode&0o7777)
	}
}
