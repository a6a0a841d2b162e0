package hardness

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/memohfs/memohfs/control"
	"github.com/memohfs/memohfs/fsnodes"
	"github.com/memohfs/memohfs/internal/creds"
	"github.com/memohfs/memohfs/internal/testenv"
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
	if e.binds = testenv.DataBinds(); e.binds {
		for _, bot := range []string{e.a, e.b, e.c} {
			waitFor(t, time.Minute, bot+"'s data/ bound", func() bool {
				var st, mnt unix.Stat_t
				return unix.Stat(s.Mnt, &mnt) == nil && unix.Stat(e.data(bot), &st) == nil && st.Dev != mnt.Dev &&
					strings.Contains(s.ReadOrError(bot, "status"), "\ndata-path bind\n")
			})
		}
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

// ---- the attacks ----

func escAbsSymlink(t *testing.T, e *escEnv) {
	e.sh(t, e.a, "ln -s "+e.secret+" /data/l-secret && ln -s "+e.pub+" /data/l-pub")
	link := e.data(e.a, "l-secret")
	// Shown as a symlink, with its target.
	fi, err := os.Lstat(link)
	if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Fatalf("lstat through the mount: %v %v", fi, err)
	}
	if got, err := os.Readlink(link); err != nil || got != e.secret {
		t.Fatalf("readlink through the mount: %q %v", got, err)
	}
	e.expect(t, escAlice, "ok "+e.secret, "readlink", link)
	// The caller's kernel follows it with the caller's rights: a file
	// the user may read is read (this proves the link is followed)...
	e.expect(t, escAlice, e.viaLink("ok "+hex.EncodeToString([]byte(escPubText))), "read", e.data(e.a, "l-pub"))
	// ... and the root-only one is not reachable in any way.
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "read", link)
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "write", link, "PWN\n")
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "append", link, "PWN\n")
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "rdwr", link, "PWN\n")
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "trunc", link)
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "write", e.data(e.a, "l-pub"), "PWN\n")
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "trunc", e.data(e.a, "l-pub"))
}

func escEtcSymlink(t *testing.T, e *escEnv) {
	var st unix.Stat_t
	if err := unix.Stat("/etc/shadow", &st); err != nil || st.Mode&0o004 != 0 {
		t.Fatalf("/etc/shadow is not private on this machine: %v %o", err, st.Mode)
	}
	e.sh(t, e.a, "ln -s /etc /data/l-etc")
	etc := e.data(e.a, "l-etc")
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "read", etc+"/shadow")
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "create", etc+"/esc-pwned", "PWN\n")
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "mkdir", etc+"/esc-pwned-dir")
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "append", etc+"/passwd", "pwn::0:0::/:/bin/sh\n")
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "symlink", e.secret, etc+"/esc-pwned-link")
}

func escRelativeSymlink(t *testing.T, e *escEnv) {
	up := strings.Repeat("../", 24) // past / from anywhere under the mount
	e.sh(t, e.a, "ln -s "+up+strings.TrimPrefix(e.secret, "/")+" /data/rel-secret && "+
		"ln -s "+up+strings.TrimPrefix(e.sealed, "/")+" /data/rel-sealed && "+
		"ln -s ../../escb/data /data/rel-b && ln -s ../.. /data/rel-root && ln -s loop /data/loop && "+
		"mkdir -p /data/in/side && ln -s ../../../../escb /data/in/side/rel-b2")
	d := func(p string) string { return e.data(e.a, p) }
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "read", d("rel-secret"))
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "append", d("rel-secret"), "PWN\n")
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "read", d("rel-sealed/keep"))
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "create", d("rel-sealed/esc-pwned"), "PWN\n")
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "read", d("rel-b/note"))
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "ls", d("rel-b"))
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "create", d("rel-b/esc-new"), "PWN\n")
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "read", d("in/side/rel-b2/status"))
	// ../.. from data/ is the mount's root: the bots, by the mount's rules.
	e.expect(t, escAlice, e.viaLink("ok esca/escb/escc"), "ls", d("rel-root"))
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "read", d("rel-root/escb/data/note"))
	e.expect(t, escAlice, escErr(syscall.ELOOP), "read", d("loop"))
	e.expect(t, escAlice, escErr(syscall.ELOOP), "create", d("loop"), "x")
	// Inside the container the same links resolve in the container.
	if out, code := e.shCode(t, e.a, "cat /data/rel-secret /data/rel-sealed/keep"); code == 0 || strings.Contains(out, "CANARY") {
		t.Errorf("the container read through the relative links: %d %q", code, out)
	}
	if _, err := os.Lstat(filepath.Join(e.s.HostData(e.b), "esc-new")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a file appeared in bob's data: %v", err)
	}
}

func escOtherBotMount(t *testing.T, e *escEnv) {
	e.sh(t, e.a, "ln -s "+e.s.Path(e.b, "data")+" /data/to-b && ln -s "+e.s.Path(e.b)+" /data/to-b-dir")
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "read", e.data(e.a, "to-b/note"))
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "ls", e.data(e.a, "to-b"))
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "create", e.data(e.a, "to-b/esc-new"), "PWN\n")
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "write", e.data(e.a, "to-b-dir/ctl"), "stop\n")
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "mkdir", e.data(e.a, "to-b-dir/snapshots/esc"))
	e.bobUntouched(t)
}

// The bot's host data dir is reachable by its path: a symlink in data/
// (or a plain path) leads a user to another user's files on the host,
// where the mount's 0700 bot dir does not stand in the way.
func escOtherBotHost(t *testing.T, e *escEnv) {
	e.sh(t, e.a, "ln -s "+e.s.HostData(e.b)+" /data/to-b-host")
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "read", e.data(e.a, "to-b-host/note"))
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "ls", e.data(e.a, "to-b-host"))
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "create", e.data(e.a, "to-b-host/esc-new"), "PWN\n")
	e.expect(t, escAlice, escErr(syscall.EACCES), "read", filepath.Join(e.s.HostData(e.b), "note"))
	e.bobUntouched(t)
}

func escDangling(t *testing.T, e *escEnv) {
	target := filepath.Join(e.can, "created-through-link")
	e.sh(t, e.a, "ln -s "+target+" /data/dang && ln -s "+e.can+"/new-dir /data/dang-dir")
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "create", e.data(e.a, "dang"), "PWN\n")
	e.expect(t, escAlice, escErr(syscall.EEXIST), "excl", e.data(e.a, "dang"))
	e.expect(t, escAlice, escErr(syscall.EEXIST), "mkdir", e.data(e.a, "dang"))
	e.expect(t, escAlice, e.viaLink(escErr(syscall.ENOENT)), "mkdir", e.data(e.a, "dang-dir/x"))
	e.expect(t, escAlice, e.viaLink(escErr(syscall.ENOENT)), "create", e.data(e.a, "dang-dir/x"), "PWN\n")
	// Root through the mount with O_EXCL: the link is never created through.
	fd, err := unix.Open(e.data(e.a, "dang"), unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o644)
	if err == nil {
		unix.Close(fd)
	}
	if err != unix.EEXIST {
		t.Errorf("root O_CREAT|O_EXCL on the dangling link: %v, want EEXIST", err)
	}
	for _, p := range []string{target, filepath.Join(e.can, "new-dir")} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s exists: %v", p, err)
		}
	}
}

func escRenameOnto(t *testing.T, e *escEnv) {
	e.sh(t, e.a, "ln -s "+e.pub+" /data/victim && ln -s "+e.secret+" /data/victim2")
	e.expect(t, escAlice, "ok", "create", e.data(e.a, "newf"), "replaced\n")
	e.expect(t, escAlice, "ok", "rename", e.data(e.a, "newf"), e.data(e.a, "victim"))
	escWantFile(t, filepath.Join(e.s.HostData(e.a), "victim"), "replaced\n")
	// Root renames onto the other one; and a link renamed keeps pointing
	// where it did.
	must(t, os.WriteFile(e.data(e.a, "newf2"), []byte("replaced2\n"), 0o644))
	must(t, os.Rename(e.data(e.a, "newf2"), e.data(e.a, "victim2")))
	escWantFile(t, filepath.Join(e.s.HostData(e.a), "victim2"), "replaced2\n")
	e.sh(t, e.a, "ln -s "+e.secret+" /data/victim3")
	e.expect(t, escAlice, "ok", "rename", e.data(e.a, "victim3"), e.data(e.a, "moved-link"))
	if got, err := os.Readlink(filepath.Join(e.s.HostData(e.a), "moved-link")); err != nil || got != e.secret {
		t.Errorf("the renamed link: %q %v", got, err)
	}
}

func escRenameInto(t *testing.T, e *escEnv) {
	e.sh(t, e.a, "ln -s "+e.sealed+" /data/l-sealed")
	e.expect(t, escAlice, "ok", "create", e.data(e.a, "mv-me"), "x\n")
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EXDEV)), "rename", e.data(e.a, "mv-me"), e.data(e.a, "l-sealed/mv-me"))
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EXDEV)), "rename", e.data(e.a, "l-sealed/keep"), e.data(e.a, "stolen"))
	if err := os.Rename(e.data(e.a, "mv-me"), e.data(e.a, "l-sealed", "mv-me")); fileOpErrno(err) != e.linkErrno(syscall.EXDEV) {
		t.Errorf("root rename into the linked dir: %v, want %v", err, e.linkErrno(syscall.EXDEV))
	}
	if err := os.Rename(e.data(e.a, "l-sealed", "keep"), e.data(e.a, "stolen")); fileOpErrno(err) != e.linkErrno(syscall.EXDEV) {
		t.Errorf("root rename out of the linked dir: %v, want %v", err, e.linkErrno(syscall.EXDEV))
	}
}

func escSetattrSymlink(t *testing.T, e *escEnv) {
	e.sh(t, e.a, "ln -s "+e.secret+" /data/attr-link")
	link := e.data(e.a, "attr-link")
	host := filepath.Join(e.s.HostData(e.a), "attr-link")
	// Root through the mount, on the link itself.
	if err := unix.Fchmodat(unix.AT_FDCWD, link, 0o777, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		t.Error("chmod of the symlink itself succeeded (Linux symlinks have no mode)")
	}
	must(t, unix.Lchown(link, 4242, 4242))
	must(t, unix.UtimesNanoAt(unix.AT_FDCWD, link, []unix.Timespec{{Sec: 1}, {Sec: 1}}, unix.AT_SYMLINK_NOFOLLOW))
	var st unix.Stat_t
	must(t, unix.Lstat(host, &st))
	if st.Uid != 4242 || st.Mtim.Sec != 1 {
		t.Errorf("lchown/lutimes did not reach the link: uid %d mtime %d", st.Uid, st.Mtim.Sec)
	}
	if err := unix.Lsetxattr(link, "user.esc", []byte("1"), 0); err != unix.EPERM {
		t.Errorf("lsetxattr user.esc on the link: %v, want EPERM", err)
	}
	if _, err := unix.Lgetxattr(link, "user.esc", make([]byte, 16)); err != unix.ENODATA {
		t.Errorf("lgetxattr user.esc on the link: %v, want ENODATA", err)
	}
	// The user: chmod and utimes follow the link to a file not theirs.
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EPERM)), "chmod", "0666", link)
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EPERM)), "utime", link)
	out, err := e.run(t, escAlice, 10*time.Second, "setfattr", "-h", "-n", "user.esc", "-v", "1", link)
	if err == nil || !strings.Contains(out, "ermission denied") && !strings.Contains(out, "ot permitted") {
		t.Errorf("setfattr -h on the link as the user: %v %q", err, out)
	}
	out, err = e.run(t, escAlice, 10*time.Second, "setfattr", "-n", "user.esc", "-v", "1", link)
	if err == nil || !strings.Contains(out, e.linkMsg("ermission denied")) {
		t.Errorf("setfattr through the link as the user: %v %q", err, out)
	}
}

func escXattrNamespaces(t *testing.T, e *escEnv) {
	e.sh(t, e.a, "echo x > /data/xattr-file")
	p := e.data(e.a, "xattr-file")
	// A valid VFS_CAP_REVISION_2 value granting CAP_SETUID: file
	// capabilities through the mount would be an escalation.
	capv := make([]byte, 20)
	binary.LittleEndian.PutUint32(capv[0:], 0x02000001)
	binary.LittleEndian.PutUint32(capv[4:], 1<<unix.CAP_SETUID)
	xattrs := map[string][]byte{"security.capability": capv, "trusted.esc": []byte("1"), "security.esc": []byte("1")}
	if e.binds {
		// data/ is the bot's dir itself (a bind): root sets them as on
		// ext4 (compared with a native file); a capability is inert, the
		// bind being nosuid (as /data in the bot).
		native := filepath.Join(e.s.Env.TempDir(t), "f")
		must(t, os.WriteFile(native, nil, 0o644))
		for name, val := range xattrs {
			got, want := unix.Setxattr(p, name, val, 0), unix.Setxattr(native, name, val, 0)
			if got != want {
				t.Errorf("root setxattr %s on data/: %v, on ext4: %v", name, got, want)
			}
			unix.Removexattr(p, name)
		}
		if !escMountOptions(t, e.data(e.a))["nosuid"] {
			t.Errorf("the bind of data/ is not nosuid: a file capability set there would work")
		}
		must(t, unix.Setxattr(p, "user.esc", []byte("1"), 0))
		return
	}
	for name, val := range xattrs {
		if err := unix.Setxattr(p, name, val, 0); err != unix.EOPNOTSUPP {
			t.Errorf("root setxattr %s through the mount: %v, want EOPNOTSUPP", name, err)
		}
		if _, err := unix.Lgetxattr(filepath.Join(e.s.HostData(e.a), "xattr-file"), name, make([]byte, 64)); err != unix.ENODATA {
			t.Errorf("%s on the host file: %v, want ENODATA", name, err)
		}
	}
	must(t, unix.Setxattr(p, "user.esc", []byte("1"), 0))
}

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

func escDotDot(t *testing.T, e *escEnv) {
	m := e.s.Mnt
	e.expect(t, escAlice, escErr(syscall.EACCES), "read", m+"/esca/data/../../escb/data/note")
	e.expect(t, escAlice, escErr(syscall.EACCES), "ls", m+"/esca/../escb")
	e.expect(t, escAlice, escErr(syscall.EACCES), "create", m+"/esca/data/../../escb/data/esc-new", "PWN\n")
	e.expect(t, escAlice, escErr(syscall.EACCES), "read", m+"/esca/snapshots/../../escb/status")
	e.expect(t, escAlice, escErr(syscall.EACCES), "write", m+"/esca/skills/../../escb/ctl", "stop\n")
	e.expect(t, escAlice, escErr(syscall.EACCES), "mkdir", m+"/esca/data/../../escb/snapshots/esc")
	e.expect(t, escAlice, escErr(syscall.EPERM), "rmdir", m+"/esca/data/../../escb") // /M is sticky
	e.bobUntouched(t)
}

func escCtlNames(t *testing.T, e *escEnv) {
	before := e.snapDirs(t)
	for _, text := range []string{
		"snapshot a/b", "snapshot ../x", "snapshot ../../../../tmp/esc-x", "snapshot .", "snapshot ..",
		"snapshot .hidden", "snapshot /etc", "snapshot -x", "snapshot " + strings.Repeat("s", 129),
		"restore ../../x", "restore /etc/passwd", "restore a/b", "restore ..", "restore .",
	} {
		err := e.s.Ctl(e.a, text)
		if fileOpErrno(err) != syscall.EINVAL {
			t.Errorf("%q > ctl: %v, want EINVAL", text, err)
		}
		if msg := e.s.ReadOrError(e.a, "err"); !strings.Contains(msg, "name") {
			t.Errorf("%q > ctl: err says %q", text, msg)
		}
	}
	// The owner through the shell, the same.
	// /bin/echo: dash's builtin says "I/O error" for any failed write.
	out, err := e.s.AsUser(escAlice, `/bin/echo 'snapshot ../../x' > $M/esca/ctl`)
	if err == nil || !strings.Contains(out, "Invalid argument") {
		t.Errorf("alice: snapshot ../../x: %v %q (err: %q)", err, out, e.s.ReadOrError(e.a, "err"))
	}
	if after := e.snapDirs(t); after != before {
		t.Errorf("snapshot dirs changed: %s -> %s", before, after)
	}
	for _, p := range []string{"/tmp/esc-x", filepath.Join(e.s.Root, "x"), filepath.Join(e.s.Root, "snapshots", "x"),
		filepath.Join(e.s.Root, "snapshots", "a")} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s exists: %v", p, err)
		}
	}
}

func escSnapshotNames(t *testing.T, e *escEnv) {
	before := e.snapDirs(t)
	for _, name := range []string{".x", "-x", "a b", `a\b`, "x\ny", "x:y", strings.Repeat("s", 129)} {
		e.expect(t, escAlice, escErr(syscall.EINVAL), "mkdir", e.s.Path(e.a, "snapshots", name))
	}
	e.expect(t, escAlice, escErr(syscall.ENAMETOOLONG), "mkdir", e.s.Path(e.a, "snapshots", strings.Repeat("s", 256)))
	if after := e.snapDirs(t); after != before {
		t.Errorf("snapshot dirs changed: %s -> %s", before, after)
	}
}

func escBotNames(t *testing.T, e *escEnv) {
	for _, name := range []string{"Bad", "a.b", "a b", "-x", "_x", ".x", "x\ny", "x:y", "ä", strings.Repeat("a", 64)} {
		e.expect(t, escAlice, escErr(syscall.EINVAL), "mkdir", e.s.Path(name))
	}
	e.expect(t, escAlice, escErr(syscall.ENAMETOOLONG), "mkdir", e.s.Path(strings.Repeat("a", 256)))
	ents, err := os.ReadDir(filepath.Join(e.s.Root, "bots"))
	must(t, err)
	var names []string
	for _, d := range ents {
		names = append(names, d.Name())
	}
	if got := strings.Join(names, " "); got != "esca escb escc" {
		t.Errorf("host bot dirs: %s", got)
	}
}

func escHardlinks(t *testing.T, e *escEnv) {
	out, code := e.shCode(t, e.a, "ln /bin/busybox /data/hl-bin; ln /proc/1/status /data/hl-proc")
	if code == 0 || strings.Count(out, "ross-device") != 2 {
		t.Errorf("hard links from the container's rootfs into /data: %d %q", code, out)
	}
	if err := os.Link(e.pub, e.data(e.a, "hl-pub")); fileOpErrno(err) != syscall.EXDEV {
		t.Errorf("root: link a host file into data/: %v, want EXDEV", err)
	}
	e.expect(t, escAlice, escErr(syscall.EXDEV), "link", e.pub, e.data(e.a, "hl-pub2"))
	if err := os.Link(e.s.Path(e.b, "data", "note"), e.data(e.a, "hl-b")); fileOpErrno(err) != syscall.EXDEV {
		t.Errorf("root: link bob's file into alice's data/: %v, want EXDEV", err)
	}
	e.sh(t, e.a, "echo mine > /data/hl-src")
	if err := os.Link(e.data(e.a, "hl-src"), filepath.Join(e.can, "hl-out")); fileOpErrno(err) != syscall.EXDEV {
		t.Errorf("root: link a data/ file out of the mount: %v, want EXDEV", err)
	}
	e.expect(t, escAlice, escErr(syscall.EXDEV), "link", e.data(e.a, "hl-src"), "/tmp/esc-hl-out")
	ents, err := os.ReadDir(e.s.HostData(e.a))
	must(t, err)
	for _, d := range ents {
		if strings.HasPrefix(d.Name(), "hl-") && d.Name() != "hl-src" {
			t.Errorf("%s was made in data/", d.Name())
		}
	}
	if _, err := os.Lstat("/tmp/esc-hl-out"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("/tmp/esc-hl-out: %v", err)
	}
}

func escDevices(t *testing.T, e *escEnv) {
	e.sh(t, e.a, fmt.Sprintf("mknod /data/cdev c 1 5 && mknod /data/bdev b %d %d && chmod 666 /data/cdev /data/bdev", e.loopMaj, e.loopMin))
	opts := escMountOptions(t, e.s.Mnt)
	for _, o := range []string{"nosuid", "nodev"} {
		if !opts[o] {
			t.Errorf("the mount lacks %s: %v", o, opts)
		}
	}
	fi, err := os.Lstat(e.data(e.a, "bdev"))
	if err != nil || fi.Mode()&fs.ModeDevice == 0 {
		t.Fatalf("the bot's device through the mount: %v %v", fi, err)
	}
	for _, name := range []string{"cdev", "bdev"} {
		for _, flags := range []int{unix.O_RDONLY, unix.O_RDWR, unix.O_WRONLY | unix.O_TRUNC} {
			begin := time.Now()
			fd, err := unix.Open(e.data(e.a, name), flags|unix.O_NONBLOCK, 0)
			if err == nil {
				unix.Close(fd)
			}
			if err != unix.EACCES || time.Since(begin) > 2*time.Second {
				t.Errorf("root opens the bot's %s (flags %#x): %v after %s, want EACCES at once", name, flags, err, time.Since(begin))
			}
		}
		e.expect(t, escAlice, escErr(syscall.EACCES), "read", e.data(e.a, name))
		e.expect(t, escAlice, escErr(syscall.EACCES), "rdwr", e.data(e.a, name), "PWN")
	}
	if err := os.Truncate(e.data(e.a, "bdev"), 0); fileOpErrno(err) != syscall.EINVAL {
		t.Errorf("truncate of the device through the mount: %v, want EINVAL", err)
	}
	// Root may make a device node through the mount (tar x of a root
	// file system), as on ext4; it opens nothing: every mount of bot data
	// is nodev.
	if err := unix.Mknod(e.data(e.a, "mydev"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 5))); err != nil {
		t.Errorf("root mknod of a device through the mount: %v, want success", err)
	} else if fd, err := unix.Open(e.data(e.a, "mydev"), unix.O_RDWR, 0); err != unix.EACCES {
		if err == nil {
			unix.Close(fd)
		}
		t.Errorf("open of a device node made through the mount: %v, want EACCES (nodev)", err)
	}
}

func escDeviceHostPath(t *testing.T, e *escEnv) {
	e.sh(t, e.a, fmt.Sprintf("[ -b /data/bdev ] || mknod /data/bdev b %d %d; chmod 666 /data/bdev; ln -s %s/bdev /data/bdev-host",
		e.loopMaj, e.loopMin, e.s.HostData(e.a)))
	p := e.data(e.a, "bdev-host")
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "read", p)
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "rdwr", p, "PWN-THROUGH-HOST-PATH")
}

func escFifo(t *testing.T, e *escEnv) {
	e.sh(t, e.a, "mkfifo /data/fifo && chmod 666 /data/fifo")
	// The bot waits to hand data to whoever opens its fifo.
	stop := e.race(t, e.a, "fifo", "", "echo BOTDATA > /data/fifo", "")
	p := e.data(e.a, "fifo")
	fi, err := os.Lstat(p)
	if err != nil || fi.Mode()&fs.ModeNamedPipe == 0 {
		t.Fatalf("the bot's fifo through the mount: %v %v", fi, err)
	}
	// Through FUSE, a reader through the mount is not connected to the
	// bot's fifo (the kernel makes a pipe of the mount's own). Through a
	// bind, the fifo is the bot's own, as in a dir shared on a local
	// disk: a reader gets what the bot writes; memohfs is not involved.
	if !e.binds {
		e.expect(t, escAlice, "ok ", "read", p)
	}
	e.expect(t, escAlice, escErr(syscall.ENXIO), "wronb", p, "x")
	begin := time.Now()
	out, err := e.run(t, escAlice, 10*time.Second, "timeout", "-s", "KILL", "2", "cat", p)
	t.Logf("blocking cat through the mount: %v after %s: %q", err, time.Since(begin).Round(time.Millisecond), out)
	if strings.Contains(out, "BOTDATA") != e.binds {
		t.Errorf("a reader through data/ got the bot's fifo data: %v, want %v (binds %v)", strings.Contains(out, "BOTDATA"), e.binds, e.binds)
	}
	if _, err := os.ReadFile(e.s.Path(e.a, "status")); err != nil {
		t.Errorf("memohfs after the fifo opens: %v", err)
	}
	must(t, os.WriteFile(filepath.Join(e.s.HostData(e.a), ".stop-fifo"), nil, 0o644))
	e.sh(t, e.a, "timeout 2 cat /data/fifo >/dev/null; true")
	t.Logf("bot: %s", stop())
}

func escSnapshotHostile(t *testing.T, e *escEnv) {
	e.sh(t, e.a, fmt.Sprintf(`mkdir /data/hostile && cd /data/hostile && ln -s %s l-secret && ln -s %s l-sealed &&
		ln -s /etc l-etc && ln -s %s rel-up && mkfifo fifo && mknod cdev c 1 5 && mknod bdev b %d %d &&
		echo plain > plain && ln -s %s /l-secret-rootfs && mknod /rootfs-bdev b %d %d && chmod 666 /rootfs-bdev`,
		e.secret, e.sealed, strings.Repeat("../", 24)+strings.TrimPrefix(e.sealed, "/"), e.loopMaj, e.loopMin,
		e.secret, e.loopMaj, e.loopMin))
	out, err := e.run(t, escAlice, 60*time.Second, "mkdir", e.s.Path(e.a, "snapshots", "s-hostile"))
	if err != nil {
		t.Fatalf("alice takes the snapshot: %v %s (err: %s)", err, out, e.s.ReadOrError(e.a, "err"))
	}
	view := e.s.Path(e.a, "snapshots", "s-hostile", "data", "hostile")
	if e.binds {
		// The views are bound once the snapshot is first looked up.
		for _, v := range []string{"data", "rootfs"} {
			p := e.s.Path(e.a, "snapshots", "s-hostile", v)
			waitFor(t, time.Minute, "the "+v+" view bound", func() bool {
				var st, mnt unix.Stat_t
				return unix.Stat(e.s.Mnt, &mnt) == nil && unix.Stat(p, &st) == nil && st.Dev != mnt.Dev
			})
		}
	}
	for name, target := range map[string]string{"l-secret": e.secret, "l-sealed": e.sealed, "l-etc": "/etc"} {
		if got, err := os.Readlink(filepath.Join(view, name)); err != nil || got != target {
			t.Errorf("snapshot view %s: %q %v, want a link to %s", name, got, err, target)
		}
	}
	for _, name := range []string{"fifo", "cdev", "bdev"} {
		if _, err := os.Lstat(filepath.Join(view, name)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("snapshot view has %s: %v", name, err)
		}
	}
	escWantFile(t, filepath.Join(view, "plain"), "plain\n")
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "read", filepath.Join(view, "l-secret"))
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "read", filepath.Join(view, "l-sealed", "keep"))
	// The bot's dir is root's 0755. Through FUSE the kernel refuses
	// alice before memohfs is asked; root gets as far as memohfs, which
	// says EROFS. Bound, the view is a read-only mount: the kernel says
	// EROFS before it checks permission, to alice as to root.
	aliceCreate := escErr(syscall.EACCES)
	if e.binds {
		aliceCreate = escErr(syscall.EROFS)
	}
	e.expect(t, escAlice, aliceCreate, "create", filepath.Join(view, "new"), "x")
	e.expect(t, escAlice, aliceCreate, "create", filepath.Join(view, "l-etc-new"), "x")
	e.expect(t, 0, escErr(syscall.EROFS), "create", filepath.Join(view, "new"), "x")
	e.expect(t, 0, escErr(syscall.EROFS), "create", filepath.Join(view, "l-etc-new"), "x")
	// The host copy holds links as links, and no canary bytes.
	copyDir, err := e.s.Control.SnapshotData(t.Context(), e.a, "s-hostile")
	must(t, err)
	e.noCanaryBytes(t, copyDir)
	// The rootfs view: links shown as links, devices not opened.
	rootfs := e.s.Path(e.a, "snapshots", "s-hostile", "rootfs")
	e.expect(t, escAlice, "ok "+e.secret, "readlink", filepath.Join(rootfs, "l-secret-rootfs"))
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "read", filepath.Join(rootfs, "l-secret-rootfs"))
	fd, err := unix.Open(filepath.Join(rootfs, "rootfs-bdev"), unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err == nil {
		unix.Close(fd)
	}
	if err != unix.EACCES && err != unix.ENOENT {
		t.Errorf("root opens the device in the rootfs view: %v, want EACCES (or ENOENT: not in the view)", err)
	}
	t.Logf("root opens the bot's device in the rootfs view: %v", err)
}

func escRestoreHostile(t *testing.T, e *escEnv) {
	e.sh(t, e.a, "rm /data/hostile/l-secret && echo changed > /data/hostile/l-secret && rm /data/hostile/l-sealed")
	e.ctl(t, e.a, "restore s-hostile")
	if st := e.state(t, e.a); st != "running" {
		t.Errorf("after restore: %s", st)
	}
	host := filepath.Join(e.s.HostData(e.a), "hostile")
	for name, target := range map[string]string{"l-secret": e.secret, "l-sealed": e.sealed} {
		if got, err := os.Readlink(filepath.Join(host, name)); err != nil || got != target {
			t.Errorf("restored %s: %q %v, want a link to %s", name, got, err, target)
		}
	}
	for _, name := range []string{"fifo", "cdev", "bdev"} {
		if _, err := os.Lstat(filepath.Join(host, name)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("restored data has %s: %v", name, err)
		}
	}
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "read", e.data(e.a, "hostile", "l-secret"))
	e.noCanaryBytes(t, e.s.HostData(e.a))
}

func escSkills(t *testing.T, e *escEnv) {
	e.sh(t, e.a, "mkdir -p /data/.skills/real && echo real > /data/.skills/real/SKILL.md")
	e.sh(t, e.a, "mv /data/.skills /data/.skills.real && ln -s "+e.sealed+" /data/.skills")
	skills := e.s.Path(e.a, "skills")
	ents, err := os.ReadDir(skills)
	for _, d := range ents {
		if d.Name() == "keep" || d.Name() == "sub" {
			t.Errorf("skills/ lists the canary dir: %v", ents)
		}
	}
	t.Logf("root lists skills/: %d entries, %v", len(ents), err)
	if b, err := os.ReadFile(filepath.Join(skills, "keep")); err == nil {
		t.Errorf("root read skills/keep: %q", b)
	}
	if err := os.Mkdir(filepath.Join(skills, "evil"), 0o755); err == nil {
		t.Error("root made skills/evil with .skills a symlink")
	}
	if err := os.WriteFile(filepath.Join(skills, "evil.md"), []byte("x"), 0o644); err == nil {
		t.Error("root wrote skills/evil.md with .skills a symlink")
	}
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "read", e.data(e.a, ".skills", "keep"))
	if fi, err := os.Lstat(e.data(e.a, ".skills")); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Errorf("data/.skills through the mount: %v %v", fi, err)
	}
	// The bot puts its skills back: the view shows them again.
	e.sh(t, e.a, "rm /data/.skills && mv /data/.skills.real /data/.skills")
	var got string
	for deadline := time.Now().Add(3 * time.Second); ; {
		b, err := os.ReadFile(filepath.Join(skills, "real", "SKILL.md"))
		if got = fmt.Sprintf("%q %v", b, err); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got != `"real\n" <nil>` {
		t.Errorf("skills/real/SKILL.md after .skills is back: %s", got)
	}
}

func escSetuid(t *testing.T, e *escEnv) {
	// The bot writes a binary (here the host's id, which does not drop
	// privileges as busybox does) and makes it setuid root.
	host := filepath.Join(e.s.HostData(e.a), "suid-id")
	escCopy(t, "/usr/bin/id", host, 0o755)
	e.sh(t, e.a, "chmod 4755 /data/suid-id")
	var st unix.Stat_t
	must(t, unix.Stat(host, &st))
	if st.Mode&0o7777 != 0o4755 || st.Uid != 0 {
		t.Fatalf("the bot's setuid binary on the host: %o uid %d", st.Mode&0o7777, st.Uid)
	}
	// Control: the same binary elsewhere on this disk does run as root.
	ctlDir := e.s.Env.TempDir(t)
	must(t, os.Chmod(ctlDir, 0o755))
	escCopy(t, "/usr/bin/id", filepath.Join(ctlDir, "suid-id"), 0o755)
	must(t, syscall.Chmod(filepath.Join(ctlDir, "suid-id"), 0o4755)) // os.Chmod wants os.ModeSetuid
	if out, err := e.run(t, escAlice, 10*time.Second, filepath.Join(ctlDir, "suid-id"), "-u"); strings.TrimSpace(out) != "0" {
		st, _ := os.ReadFile("/proc/self/status")
		ls, _ := exec.Command("ls", "-ln", filepath.Join(ctlDir, "suid-id")).CombinedOutput()
		nnp := regexp.MustCompile(`NoNewPrivs:\s*\d`).FindString(string(st))
		t.Fatalf("control: a setuid-root id off the mount runs as %q (%v; %s; %s): the check below would prove nothing", out, err, nnp, ls)
	}
	out, err := e.run(t, escAlice, 10*time.Second, e.data(e.a, "suid-id"), "-u")
	if err != nil || strings.TrimSpace(out) != itoa(escAlice) {
		t.Errorf("the setuid binary run through the mount: euid %q (%v), want %d", out, err, escAlice)
	}
}

func escSetuidHostPath(t *testing.T, e *escEnv) {
	host := filepath.Join(e.s.HostData(e.a), "suid-id")
	if _, err := os.Lstat(host); err != nil {
		escCopy(t, "/usr/bin/id", host, 0o755)
		e.sh(t, e.a, "chmod 4755 /data/suid-id")
	}
	e.sh(t, e.a, "ln -s "+host+" /data/suid-host")
	out, err := e.run(t, escAlice, 10*time.Second, e.data(e.a, "suid-host"), "-u")
	if strings.TrimSpace(out) != itoa(escAlice) && !strings.Contains(fmt.Sprint(out, err), e.linkMsg("ermission denied")) {
		t.Errorf("the bot's setuid binary run through a link to its host path: euid %q (%v), want %d or EACCES", out, err, escAlice)
	}
}

func escLongNames(t *testing.T, e *escEnv) {
	n255, n256 := strings.Repeat("n", 255), strings.Repeat("n", 256)
	e.expect(t, escAlice, "ok", "create", e.data(e.a, n255), "x")
	e.expect(t, escAlice, escErr(syscall.ENAMETOOLONG), "create", e.data(e.a, n256), "x")
	e.expect(t, escAlice, escErr(syscall.ENAMETOOLONG), "mkdir", e.data(e.a, n256))
	e.expect(t, escAlice, escErr(syscall.ENAMETOOLONG), "symlink", "x", e.data(e.a, n256))
	e.expect(t, escAlice, escErr(syscall.ENAMETOOLONG), "rename", e.data(e.a, n255), e.data(e.a, n256))
	e.expect(t, escAlice, escErr(syscall.ENAMETOOLONG), "read", e.data(e.a, n256))
	target := "/" + strings.Repeat("t", 4094) // 4095 bytes: the longest a symlink holds
	e.expect(t, escAlice, "ok", "symlink", target, e.data(e.a, "longlink"))
	e.expect(t, escAlice, "ok "+target, "readlink", e.data(e.a, "longlink"))
	e.expect(t, escAlice, escErr(syscall.ENAMETOOLONG), "symlink", target+"t", e.data(e.a, "longlink2"))
	e.expect(t, escAlice, escErr(syscall.ENAMETOOLONG), "read", e.data(e.a, strings.Repeat("x/", 2100)+"f"))
	if out, code := e.shCode(t, e.a, "touch /data/"+n256); code == 0 {
		t.Errorf("the container made a 256-byte name: %q", out)
	}
	if out, code := e.shCode(t, e.a, "ls /data/"+n255); code != 0 {
		t.Errorf("the container does not see the 255-byte name: %q", out)
	}
	must(t, os.Remove(e.data(e.a, n255)))
}

func escDeepChain(t *testing.T, e *escEnv) {
	const levels = 24 // 24 names of 201 bytes: a path of about 4.9 KiB
	long := strings.Repeat("d", 200)
	// Made with *at calls on the host (a shell's cd stops at PATH_MAX).
	fd, err := unix.Open(e.s.HostData(e.b), unix.O_DIRECTORY|unix.O_RDONLY, 0)
	must(t, err)
	name := "deep"
	for i := 0; i <= levels; i++ {
		must(t, unix.Mkdirat(fd, name, 0o755))
		nfd, err := unix.Openat(fd, name, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_NOFOLLOW, 0)
		must(t, err)
		unix.Close(fd)
		fd, name = nfd, long+itoa(i%10)
	}
	leaf, err := unix.Openat(fd, "leaf", unix.O_CREAT|unix.O_WRONLY|unix.O_EXCL, 0o644)
	must(t, err)
	unix.Write(leaf, []byte("bottom\n"))
	unix.Close(leaf)
	unix.Close(fd)
	t.Cleanup(func() { os.RemoveAll(filepath.Join(e.s.HostData(e.b), "deep")) })
	begin := time.Now()
	out, err := e.run(t, 0, 60*time.Second, "find", e.s.Path(e.b, "data", "deep"))
	lines := strings.Count(out, "\n")
	t.Logf("find through the mount: %v after %s, %d lines; %s", err, time.Since(begin).Round(time.Millisecond), lines, escTail(out, 300))
	switch {
	case err == nil && lines == levels+2 && strings.HasSuffix(strings.TrimSpace(out), "/leaf"):
	case err != nil && strings.Contains(err.Error(), "timed out"):
		t.Errorf("find through the mount hung")
	case err != nil && strings.Contains(out, "File name too long"):
		t.Logf("entries deeper than PATH_MAX are out of reach through the mount (ENAMETOOLONG), cleanly")
	default:
		t.Errorf("find through the mount: %v %d lines %s", err, lines, escTail(out, 500))
	}
	if _, err := os.ReadFile(e.s.Path(e.b, "status")); err != nil {
		t.Errorf("memohfs after the walk: %v", err)
	}
	// A snapshot of it: done, or refused cleanly; never half left behind.
	done := make(chan error, 1)
	go func() { done <- e.s.Ctl(e.b, "snapshot s-deep") }()
	select {
	case err := <-done:
		t.Logf("snapshot of the deep chain: %v (err: %q)", err, strings.TrimSpace(e.s.ReadOrError(e.b, "err")))
		if err != nil && fileOpErrno(err) != syscall.EIO {
			t.Errorf("snapshot of the deep chain: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("snapshot of the deep chain hung")
	}
	ents, _ := os.ReadDir(filepath.Join(e.s.Root, "snapshots", e.b))
	for _, d := range ents {
		if strings.HasPrefix(d.Name(), ".tmp-") {
			t.Errorf("a half-made snapshot is left: %s", d.Name())
		}
	}
	if st := e.state(t, e.b); st != "running" {
		t.Errorf("bob's bot after the snapshot: %s", st)
	}
}

func escRmdir(t *testing.T, e *escEnv) {
	host := e.s.HostData(e.c)
	created := filepath.Join(e.can, "created-by-rmdir")
	for name, target := range map[string]string{"l-secret": e.secret, "l-sealed": e.sealed, "l-dang": created, "l-keep": e.keep} {
		must(t, os.Symlink(target, filepath.Join(host, name)))
	}
	must(t, unix.Mkfifo(filepath.Join(host, "fifo"), 0o666))
	must(t, unix.Mknod(filepath.Join(host, "bdev"), unix.S_IFBLK|0o666, int(unix.Mkdev(e.loopMaj, e.loopMin))))
	e.ctl(t, e.c, "snapshot s1")
	out, err := e.run(t, escAlice, 60*time.Second, "rmdir", e.s.Path(e.c))
	if err != nil {
		t.Fatalf("alice rmdir: %v %s (err: %s)", err, out, e.s.ReadOrError(e.c, "err"))
	}
	if _, err := os.Lstat(host); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the data dir is still there: %v", err)
	}
	trash, _ := filepath.Glob(filepath.Join(e.s.Root, "trash", e.c+"-*"))
	if len(trash) != 1 {
		t.Fatalf("trash: %v", trash)
	}
	if got, err := os.Readlink(filepath.Join(trash[0], "data", "l-secret")); err != nil || got != e.secret {
		t.Errorf("the link in the trash: %q %v", got, err)
	}
	if got, err := os.Readlink(filepath.Join(trash[0], "snapshots", "s1", "data", "l-sealed")); err != nil || got != e.sealed {
		t.Errorf("the snapshot's link in the trash: %q %v", got, err)
	}
	fi, err := os.Stat(trash[0])
	if err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("the trash dir is open to others: %v %v", fi, err)
	}
	if _, err := os.Lstat(created); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s exists: %v", created, err)
	}
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

func escResult(err error) string {
	if err == nil {
		return "ok"
	}
	return escErr(fileOpErrno(err))
}

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
// is called; stop returns what the loop printed.
func (e *escEnv) race(t *testing.T, bot, name, pre, body, post string) (stop func() string) {
	t.Helper()
	flag := "/data/.stop-" + name
	hostFlag := filepath.Join(e.s.HostData(bot), ".stop-"+name)
	os.Remove(hostFlag)
	script := pre + "\nn=0; while [ ! -e " + flag + " ] && [ $n -lt 1000000 ]; do " + body + "; n=$((n+1)); done\n" + post + "\necho rounds=$n"
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	done := make(chan string, 1)
	go func() {
		var stdout, stderr bytes.Buffer
		code, err := e.s.Runtime.Exec(ctx, bot, []string{"sh", "-c", script}, &stdout, &stderr)
		done <- fmt.Sprintf("exit %d %v %s%s", code, err, strings.TrimSpace(stdout.String()), escTail(stderr.String(), 200))
	}()
	time.Sleep(100 * time.Millisecond)
	stopped := false
	stop = func() string {
		if stopped {
			return ""
		}
		stopped = true
		defer cancel()
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

func escCopy(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	must(t, err)
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	must(t, err)
	_, err = io.Copy(out, in)
	must(t, err)
	must(t, out.Close())
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
