package hardness

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/memohfs/memohfs/control"
	"github.com/memohfs/memohfs/fsnodes"
	"github.com/memohfs/memohfs/internal/creds"
	"github.com/memohfs/memohfs/internal/teststack"
	"golang.org/x/sys/unix"
)

// TestEscapes: a table of attacks run from inside a bot's container and
// through the mount, each with its outcome asserted. Whatever an attack
// does, no host file outside the bot's data dir may be read, written or
// created: the canaries (root-only files and dirs outside every data
// dir, and a loop device backed by a canary image) are fingerprinted
// before and after each attack and must not change.
//
// Attacks through the mount run as unprivileged users: a symlink the
// bot plants is followed by the caller's kernel with the caller's rights
// (normal Linux semantics), so for a user the canaries are out of reach
// unless something with root's rights (memohfs) follows the link for
// them. What memohfs itself does as root (opens, creates and their chown,
// setattr, xattrs, snapshot and restore copies, the skills view, rmdir,
// the change watcher) is attacked with symlinks, fifos and devices
// planted, or swapped in during the operation, by the bot.
func TestEscapes(t *testing.T) {
	start := time.Now()
	e := newEscEnv(t)
	base := e.fingerprint(t)
	for _, a := range escAttacks {
		t.Run(a.name, func(t *testing.T) {
			before := e.fingerprint(t)
			defer func() {
				e.sameCanaries(t, before)
				e.nothingOutside(t)
			}()
			a.run(t, e)
		})
	}
	e.sameCanaries(t, base)
	t.Logf("%d attacks in %s", len(escAttacks), time.Since(start).Round(time.Millisecond))
}

const (
	escAlice = 20001 // owns esca (running) and escc (never started)
	escBob   = 20002 // owns escb (running)

	escSecretText = "CANARY-SECRET-7f3a\n" // root 0600
	escPubText    = "CANARY-PUBLIC-91c2\n" // root 0644
	escKeepText   = "CANARY-KEEP-44d0\n"   // root 0600 in a root 0755 dir
	escDeepText   = "CANARY-DEEP-0b9e\n"   // root 0600 in a root 0700 dir
	escDiskText   = "CANARY-DISK-5e1d/"    // the loop device's content, repeated
	escBobText    = "bob-private\n"        // bob's note in his bot's data/
)

// escAttack is one entry of the table: what is tried, and the outcome.
type escAttack struct {
	name string
	run  func(t *testing.T, e *escEnv)
}

var escAttacks = []escAttack{
	{"abs symlink to a root-only file: read, write, append, truncate as the user", escAbsSymlink},
	{"symlink to /etc: read shadow, create and append in /etc as the user", escEtcSymlink},
	{"relative ../ symlinks climbing out of data/, and a symlink loop", escRelativeSymlink},
	{"symlink to another user's bot through the mount", escOtherBotMount},
	{"symlink to another user's bot's host data dir", escOtherBotHost},
	{"dangling symlink to outside: create and mkdir through it", escDangling},
	{"rename onto a symlink replaces the link, not its target", escRenameOnto},
	{"rename into and out of a symlinked dir outside", escRenameInto},
	{"chmod, chown, utimes and xattrs on a symlink through the mount", escSetattrSymlink},
	{"security.* and trusted.* xattrs through the mount", escXattrNamespaces},
	{"race: file swapped for a symlink during opens", escRaceFileSwap},
	{"race: dir swapped for a symlink during creates under it", escRaceDirSwap},
	{"race: dir swapped for a symlink under a held dir fd (root)", escRaceHeldDir},
	{"race: setattr and xattrs on a file swapped for a symlink", escRaceSetattr},
	{"race: create racing a fifo or symlink planted at the name", escRaceCreate},
	{"race: truncate racing a fifo swapped in", escRaceTruncate},
	{"race: the watcher's walk of a new dir swapped for a symlink", escRaceWatcher},
	{"a dir held open, renamed away and back by the bot, stays usable", escHeldDirRenamed},
	{"a name the user removed, then made and removed by the bot, is seen gone", escGoneAgain},
	{"a name looked up as missing, made by the bot as its events overflow, is seen", escOverflowMissing},
	{"exchange: create (O_CREAT) racing hostile objects swapped in", escExchange("create")},
	{"exchange: create (O_CREAT|O_EXCL) racing hostile objects swapped in", escExchange("create-excl")},
	{"exchange: mkdir racing hostile objects swapped in", escExchange("mkdir")},
	{"exchange: symlink racing hostile objects swapped in", escExchange("symlink")},
	{"exchange: mkdir in a dir swapped for hostile objects", escExchange("mkdir-in")},
	{"exchange: chmod of a file swapped for hostile objects", escExchange("chmod")},
	{"exchange: truncate of a file swapped for hostile objects", escExchange("truncate")},
	{"exchange: open for reading of a file swapped for hostile objects", escExchange("open-read")},
	{"exchange: open for writing of a file swapped for hostile objects", escExchange("open-write")},
	{".. in paths through the mount to another user's bot", escDotDot},
	{"ctl snapshot and restore names with / and ..", escCtlNames},
	{"mkdir of snapshots with bad names", escSnapshotNames},
	{"mkdir of bots with bad names", escBotNames},
	{"hard links to files outside data/", escHardlinks},
	{"device nodes made by the bot, opened through the mount", escDevices},
	{"device node reached through a symlink to its host path", escDeviceHostPath},
	{"fifo made by the bot, opened through the mount", escFifo},
	{"snapshot of data/ holding links to canaries, fifos and devices", escSnapshotHostile},
	{"restore of that snapshot", escRestoreHostile},
	{"data/.skills replaced by a symlink to a canary dir", escSkills},
	{"setuid binary made in data/, run through the mount (nosuid)", escSetuid},
	{"setuid binary reached through a symlink to its host path", escSetuidHostPath},
	{"very long names, symlink targets and paths", escLongNames},
	{"a directory chain deeper than PATH_MAX", escDeepChain},
	{"rmdir of a bot whose data/ holds links to canaries", escRmdir},
}

// escEnv is the shared setup: one stack, three bots, the canaries.
type escEnv struct {
	s       *stack
	a, b, c string // bots: alice's running, bob's running, alice's stopped

	can                       string // canary dir (root 0755)
	secret, pub, sealed, keep string // canary files and dir
	disk, loopDev             string // canary image and its loop device ("" if none)
	loopMaj, loopMin          uint32
	tools                     string // esc.pl
	diskHex                   string
	// pool runs the race victims' calls in-process as root or as a user
	// (see xRace).
	pool *creds.Pool
	// nosym: the mount is nosymfollow (it is with --data-binds): a path
	// walk through a link the bot made answers ELOOP, whatever it points
	// to.
	nosym bool
	// binds: data/ is each bot's data dir bound over its node, served by
	// the kernel (--data-binds; MEMOHFS_TEST_DATA_PATH=bind), not the
	// FUSE node.
	binds   bool
	settled int // markers made by settle
}

// viaLink is want, the esc.pl result of a call that follows a link the
// bot made, or, if the mount is nosymfollow, the result of that: ELOOP.
func (e *escEnv) viaLink(want string) string {
	if e.nosym {
		return escErr(syscall.ELOOP)
	}
	return want
}

// linkOutcome is viaLink for an xOutcome.
func (e *escEnv) linkOutcome(want string) string {
	if e.nosym {
		return "ELOOP"
	}
	return want
}

// linkErrno is viaLink for an errno.
func (e *escEnv) linkErrno(want syscall.Errno) syscall.Errno {
	if e.nosym {
		return syscall.ELOOP
	}
	return want
}

// linkMsg is viaLink for a tool's error message (a part of it).
func (e *escEnv) linkMsg(want string) string {
	if e.nosym {
		return "symbolic links"
	}
	return want
}

func newEscEnv(t *testing.T) *escEnv {
	s := newStack(t, teststack.Options{FS: fsnodes.Options{AllowOther: true}})
	e := &escEnv{s: s, a: "esca", b: "escb", c: "escc", pool: creds.NewPool(1)}

	e.can = s.Env.TempDir(t)
	must(t, os.Chmod(e.can, 0o755))
	e.secret = filepath.Join(e.can, "secret")
	e.pub = filepath.Join(e.can, "pub")
	e.sealed = filepath.Join(e.can, "sealed")
	e.keep = filepath.Join(e.sealed, "keep")
	escWrite(t, e.secret, escSecretText, 0o600)
	escWrite(t, e.pub, escPubText, 0o644)
	must(t, os.Mkdir(e.sealed, 0o755))
	must(t, os.Chmod(e.sealed, 0o755))
	escWrite(t, e.keep, escKeepText, 0o600)
	must(t, os.Mkdir(filepath.Join(e.sealed, "sub"), 0o700))
	escWrite(t, filepath.Join(e.sealed, "sub", "deep"), escDeepText, 0o600)
	e.diskHex = hex.EncodeToString([]byte(escDiskText))

	// A loop device over a canary image: a block device the bot can
	// mknod, harmless to open, whose every write shows in the image.
	e.disk = filepath.Join(e.can, "disk.img")
	img := strings.Repeat(escDiskText, 64<<10/len(escDiskText)+1)[:64<<10]
	escWrite(t, e.disk, img, 0o600)
	if out, err := exec.Command("losetup", "--find", "--show", e.disk).Output(); err == nil {
		e.loopDev = strings.TrimSpace(string(out))
		t.Cleanup(func() { exec.Command("losetup", "-d", e.loopDev).Run() })
		var st unix.Stat_t
		must(t, unix.Stat(e.loopDev, &st))
		e.loopMaj, e.loopMin = unix.Major(st.Rdev), unix.Minor(st.Rdev)
	} else {
		t.Logf("no loop device (%v: %s): the device attacks use /dev/zero's numbers", err, out)
		e.loopMaj, e.loopMin = 1, 5
	}

	e.tools = s.Env.TempDir(t)
	must(t, os.Chmod(e.tools, 0o755))
	escWrite(t, filepath.Join(e.tools, "esc.pl"), escPerl, 0o755)

	e.nosym = escMountOptions(t, s.Mnt)["nosymfollow"]
	if out, err := s.AsUser(escAlice, `mkdir $M/esca $M/escc`); err != nil {
		t.Fatalf("alice makes her bots: %v %s", err, out)
	}
	if out, err := s.AsUser(escBob, `mkdir $M/escb && printf 'bob-private\n' > $M/escb/data/note`); err != nil {
		t.Fatalf("bob makes his bot: %v %s", err, out)
	}
	for _, bot := range []string{e.a, e.b} {
		e.ctl(t, bot, "start")
	}
	e.binds = s.Binds
	for _, bot := range []string{e.a, e.b, e.c} {
		s.Bound(bot) // with binds, waits for the bind
	}
	t.Cleanup(func() {
		for _, bot := range []string{e.a, e.b} {
			if err := s.Ctl(bot, "stop 1"); err != nil {
				t.Logf("stop %s: %v", bot, err)
			}
		}
	})
	return e
}

// ---- helpers ----

// escPerl runs one file operation as whoever runs it, and prints
// `ok[ DATA]` or `errno N` (read data in hex).
const escPerl = `#!/usr/bin/perl
use strict;
use warnings;
use Fcntl;

sub res { return "errno " . ($! + 0) }

sub one {
	my ($op, @a) = @_;
	if ($op eq "read") {
		sysopen(my $f, $a[0], O_RDONLY | O_NONBLOCK) or return res();
		my $b = "";
		defined(sysread($f, $b, 65536)) or return res();
		return "ok " . unpack("H*", $b);
	}
	my %wr = (write => O_WRONLY | O_TRUNC, append => O_WRONLY | O_APPEND, rdwr => O_RDWR,
		create => O_WRONLY | O_CREAT | O_TRUNC | O_NONBLOCK, excl => O_WRONLY | O_CREAT | O_EXCL,
		wronb => O_WRONLY | O_NONBLOCK);
	if (exists $wr{$op}) {
		sysopen(my $f, $a[0], $wr{$op}, 0644) or return res();
		if (defined $a[1]) { defined(syswrite($f, $a[1])) or return res() }
		close($f) or return res();
		return "ok";
	}
	return truncate($a[0], 0) ? "ok" : res() if $op eq "trunc";
	return mkdir($a[0], 0755) ? "ok" : res() if $op eq "mkdir";
	return rmdir($a[0]) ? "ok" : res() if $op eq "rmdir";
	return rename($a[0], $a[1]) ? "ok" : res() if $op eq "rename";
	return link($a[0], $a[1]) ? "ok" : res() if $op eq "link";
	return symlink($a[0], $a[1]) ? "ok" : res() if $op eq "symlink";
	return unlink($a[0]) ? "ok" : res() if $op eq "unlink";
	return chmod(oct($a[0]), $a[1]) ? "ok" : res() if $op eq "chmod";
	return utime(1, 1, $a[0]) ? "ok" : res() if $op eq "utime";
	if ($op eq "ls") {
		opendir(my $d, $a[0]) or return res();
		my @n = sort grep { $_ ne "." && $_ ne ".." } readdir($d);
		return "ok " . join("/", @n);
	}
	if ($op eq "readlink") {
		my $t = readlink($a[0]);
		return defined $t ? "ok $t" : res();
	}
	die "esc.pl: unknown op $op\n";
}

print one(@ARGV), "\n";
`

func escErr(e syscall.Errno) string { return "errno " + itoa(int(e)) }

func (e *escEnv) data(bot string, p ...string) string {
	return e.s.Path(append([]string{bot, "data"}, p...)...)
}

// run runs argv as uid (0: as root) with $M the mount, killed after
// timeout (then the error says "timed out").
func (e *escEnv) run(t *testing.T, uid uint32, timeout time.Duration, argv ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// Through env, a host binary: Go starts a child with vfork, and until
	// the child's execve is done the parent's thread holds its P. An
	// execve of a file on the mount asks this very process (the mount's
	// server) on the way, and a garbage collection that starts then waits
	// for that P: the server stops, the execve never ends (cc25 hung 9
	// minutes in escSetuid). env's execve happens in a process of its own.
	cmd := exec.CommandContext(ctx, "/usr/bin/env", append([]string{"--"}, argv...)...)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/bin:/bin:/usr/sbin:/sbin", "M=" + e.s.Mnt, "HOME=/", "LC_ALL=C"}
	if uid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	}
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return string(out), fmt.Errorf("timed out after %s", timeout)
	}
	return string(out), err
}

// op runs one esc.pl operation as uid and returns its result line.
func (e *escEnv) op(t *testing.T, uid uint32, args ...string) string {
	t.Helper()
	out, err := e.run(t, uid, 20*time.Second, append([]string{"/usr/bin/perl", filepath.Join(e.tools, "esc.pl")}, args...)...)
	if err != nil {
		t.Fatalf("uid %d %v: %v %s", uid, escShort(args), err, out)
	}
	return strings.TrimSuffix(out, "\n")
}

// expect asserts the result of one operation by uid.
func (e *escEnv) expect(t *testing.T, uid uint32, want string, args ...string) {
	t.Helper()
	if got := e.op(t, uid, args...); got != want {
		t.Errorf("uid %d %v: got %q, want %q", uid, escShort(args), escTail(got, 200), escTail(want, 200))
	}
}

// sh runs a script in a running bot (busybox sh) and fails on a non-zero
// exit.
func (e *escEnv) sh(t *testing.T, bot, script string) string {
	t.Helper()
	out, code := e.shCode(t, bot, script)
	if code != 0 {
		t.Fatalf("in %s: %s: exit %d: %s", bot, escTail(script, 300), code, out)
	}
	return out
}

func (e *escEnv) shCode(t *testing.T, bot, script string) (string, int) {
	t.Helper()
	// Not t.Context(): that is cancelled before the cleanups run.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code, err := e.s.Runtime.Exec(ctx, bot, []string{"sh", "-c", script}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("exec in %s: %v", bot, err)
	}
	return stdout.String() + stderr.String(), code
}

// race runs body in a loop in the bot (after pre, then post) until stop
// is called, and returns once the loop runs (pre is done); stop returns
// what the loop printed.
func (e *escEnv) race(t *testing.T, bot, name, pre, body, post string) (stop func() string) {
	t.Helper()
	flag := "/data/.stop-" + name
	hostFlag := filepath.Join(e.s.HostData(bot), ".stop-"+name)
	hostRunning := filepath.Join(e.s.HostData(bot), ".running-"+name)
	os.Remove(hostFlag)
	os.Remove(hostRunning)
	script := pre + "\n: > /data/.running-" + name +
		"\nn=0; while [ ! -e " + flag + " ] && [ $n -lt 1000000 ]; do " + body + "; n=$((n+1)); done\n" + post + "\necho rounds=$n"
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	done := make(chan string, 1)
	go func() {
		var stdout, stderr bytes.Buffer
		code, err := e.s.Runtime.Exec(ctx, bot, []string{"sh", "-c", script}, &stdout, &stderr)
		done <- fmt.Sprintf("exit %d %v %s%s", code, err, strings.TrimSpace(stdout.String()), escTail(stderr.String(), 200))
	}()
	// The loop runs once the bot made its marker; a script that ended
	// before (pre failed) has its output kept for stop.
	ended := ""
	waitFor(t, time.Minute, "the race in "+bot+" runs", func() bool {
		select {
		case ended = <-done:
			return true
		default:
		}
		_, err := os.Lstat(hostRunning)
		return err == nil
	})
	os.Remove(hostRunning)
	stopped := false
	stop = func() string {
		if stopped {
			return ""
		}
		stopped = true
		defer cancel()
		if ended != "" {
			return ended
		}
		if err := os.WriteFile(hostFlag, nil, 0o644); err != nil {
			t.Errorf("stop the race: %v", err)
		}
		defer os.Remove(hostFlag)
		select {
		case out := <-done:
			return out
		case <-time.After(30 * time.Second):
			t.Errorf("the race in %s did not stop", bot)
			return "(did not stop)"
		}
	}
	t.Cleanup(func() { stop() })
	return stop
}

// fifoReader makes fifo /data/.NAME in the bot with a reader that counts,
// in /data/.NAME-opens, every open of it for writing.
func (e *escEnv) fifoReader(t *testing.T, bot, name string) {
	t.Helper()
	f := "/data/." + name
	e.sh(t, bot, "rm -f "+f+" "+f+"-opens "+f+"-stop && mkfifo -m 666 "+f+" && : > "+f+"-opens && "+
		"( while :; do cat "+f+" > /dev/null; [ -e "+f+"-stop ] && break; echo o >> "+f+"-opens; done ) </dev/null >/dev/null 2>&1 &")
	t.Cleanup(func() {
		os.WriteFile(filepath.Join(e.s.HostData(bot), "."+name+"-stop"), nil, 0o644)
		e.shCode(t, bot, "timeout 2 sh -c ': > "+f+"'; true")
	})
}

// fifoWriter makes fifo /data/.NAME in the bot with a writer that
// counts, in /data/.NAME-opens, every open of it for reading.
func (e *escEnv) fifoWriter(t *testing.T, bot, name string) {
	t.Helper()
	f := "/data/." + name
	e.sh(t, bot, "rm -f "+f+" "+f+"-opens "+f+"-stop && mkfifo -m 666 "+f+" && : > "+f+"-opens && "+
		"( while :; do ( echo x > "+f+" ) 2>/dev/null; [ -e "+f+"-stop ] && break; echo o >> "+f+"-opens; done ) </dev/null >/dev/null 2>&1 &")
	t.Cleanup(func() {
		os.WriteFile(filepath.Join(e.s.HostData(bot), "."+name+"-stop"), nil, 0o644)
		e.shCode(t, bot, "timeout 2 cat "+f+" >/dev/null; true")
	})
}

// fifoUntouched asserts memohfs never opened the bot's fifo (of
// fifoReader, or of fifoWriter), nor gave it to the caller: through a
// bind, the callers' own opens of it (victim, counted by them) reach it,
// as on a local disk; through FUSE none does.
func (e *escEnv) fifoUntouched(t *testing.T, bot, name string, victim int) {
	t.Helper()
	if !e.binds {
		victim = 0
	}
	host := filepath.Join(e.s.HostData(bot), "."+name)
	b, err := os.ReadFile(host + "-opens")
	must(t, err)
	if n := strings.Count(string(b), "o\n"); n > victim {
		t.Errorf("the fifo the bot planted was opened %d times, by the victim's own opens at most %d: memohfs (root) opened it", n, victim)
	}
	var st unix.Stat_t
	must(t, unix.Lstat(host, &st))
	if st.Uid != 0 {
		t.Errorf("the bot's fifo was chowned to uid %d", st.Uid)
	}
}

func (e *escEnv) ctl(t *testing.T, bot, text string) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- e.s.Ctl(bot, text) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s > %s/ctl: %v (err: %s)", text, bot, err, e.s.ReadOrError(bot, "err"))
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("%s > %s/ctl hung", text, bot)
	}
}

func (e *escEnv) state(t *testing.T, bot string) string {
	t.Helper()
	st, err := control.ParseStatus(e.s.ReadOrError(bot, "status"))
	if err != nil {
		t.Fatalf("status of %s: %v", bot, err)
	}
	return string(st.State)
}

func (e *escEnv) bobUntouched(t *testing.T) {
	t.Helper()
	escWantFile(t, filepath.Join(e.s.HostData(e.b), "note"), escBobText)
	for _, n := range []string{"esc-new"} {
		if _, err := os.Lstat(filepath.Join(e.s.HostData(e.b), n)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s in bob's data: %v", n, err)
		}
	}
	if st := e.state(t, e.b); st != "running" {
		t.Errorf("bob's bot: %s", st)
	}
	if ents, err := os.ReadDir(filepath.Join(e.s.Root, "snapshots", e.b)); err == nil && len(ents) > 0 {
		t.Errorf("bob's bot has snapshots: %v", ents)
	}
}

// snapDirs lists the snapshot dirs on the host, all bots.
func (e *escEnv) snapDirs(t *testing.T) string {
	t.Helper()
	var out []string
	filepath.WalkDir(filepath.Join(e.s.Root, "snapshots"), func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(e.s.Root, p)
		out = append(out, rel)
		if strings.Count(rel, "/") >= 2 && d != nil && d.IsDir() {
			return filepath.SkipDir
		}
		return nil
	})
	return strings.Join(out, " ")
}

// noCanaryBytes asserts no regular file under dir holds canary content,
// and dir holds no device or fifo.
func (e *escEnv) noCanaryBytes(t *testing.T, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Errorf("walk %s: %v", p, err)
			return nil
		}
		switch {
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				t.Errorf("%s: %v", p, err)
			}
			if bytes.Contains(b, []byte("CANARY-")) {
				t.Errorf("%s holds canary content", p)
			}
		case d.Type()&(fs.ModeDevice|fs.ModeNamedPipe|fs.ModeSocket) != 0:
			if !strings.HasPrefix(d.Name(), ".F") { // the race tests' fifos live in data/
				t.Errorf("%s is a %v", p, d.Type())
			}
		}
		return nil
	})
}

// fingerprint describes every canary: type, mode, owner, size, times
// (not atime), content, xattrs.
func (e *escEnv) fingerprint(t *testing.T) map[string]string {
	t.Helper()
	if e.loopDev != "" {
		unix.Sync() // writes to the loop device reach the image
	}
	m := map[string]string{}
	filepath.WalkDir(e.can, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			m[p] = "walk: " + err.Error()
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			m[p] = "lstat: " + err.Error()
			return nil
		}
		v := fmt.Sprintf("mode=%o uid=%d gid=%d size=%d mtime=%d ctime=%d", st.Mode, st.Uid, st.Gid, st.Size, st.Mtim.Nano(), st.Ctim.Nano())
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			sum := sha256.Sum256(b)
			v += fmt.Sprintf(" sha=%x %v", sum[:8], err)
		case unix.S_IFLNK:
			l, _ := os.Readlink(p)
			v += " -> " + l
		}
		buf := make([]byte, 4096)
		if n, err := unix.Llistxattr(p, buf); err == nil && n > 0 {
			v += " xattrs=" + strings.ReplaceAll(string(buf[:n]), "\x00", ",")
		}
		m[p] = v
		return nil
	})
	return m
}

func (e *escEnv) sameCanaries(t *testing.T, before map[string]string) {
	t.Helper()
	after := e.fingerprint(t)
	var keys []string
	for k := range before {
		keys = append(keys, k)
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		if before[k] != after[k] {
			t.Errorf("CANARY CHANGED %s:\n\tbefore %q\n\tafter  %q", k, before[k], after[k])
		}
	}
}

// nothingOutside asserts what the attacks try to create outside is not
// there.
func (e *escEnv) nothingOutside(t *testing.T) {
	t.Helper()
	for _, p := range []string{"/etc/esc-pwned", "/etc/esc-pwned-dir", "/etc/esc-pwned-link", "/tmp/esc-x", "/tmp/esc-hl-out"} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s exists: %v", p, err)
		}
	}
	if b, err := os.ReadFile("/etc/passwd"); err != nil || bytes.Contains(b, []byte("pwn::0:0")) {
		t.Errorf("/etc/passwd: %v", err)
	}
}

// escMountOptions gives the options of the mount at dir.
func escMountOptions(t *testing.T, dir string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	must(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 5 && f[4] == dir {
			opts := map[string]bool{}
			for _, o := range strings.Split(f[5], ",") {
				opts[o] = true
			}
			return opts
		}
	}
	t.Fatalf("%s is not in mountinfo", dir)
	return nil
}

func escWrite(t *testing.T, p, content string, mode os.FileMode) {
	t.Helper()
	must(t, os.WriteFile(p, []byte(content), mode))
	must(t, os.Chmod(p, mode))
}

func escWantFile(t *testing.T, p, want string) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		t.Errorf("%s: not a regular file (%v, mode %o)", p, err, st.Mode)
		return
	}
	if b, err := os.ReadFile(p); err != nil || string(b) != want {
		t.Errorf("%s: %q %v, want %q", p, b, err, want)
	}
}

func escShort(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = escTail(a, 120)
	}
	return out
}

func escTail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
