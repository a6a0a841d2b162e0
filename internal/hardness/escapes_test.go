package hardness

import (
	"bufio"
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
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/memohfs/memohfs/control"
	"github.com/memohfs/memohfs/fsnodes"
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

	can                         string // canary dir (root 0755)
	secret, pub, sealed, keep   string // canary files and dir
	disk, loopDev               string // canary image and its loop device ("" if none)
	loopMaj, loopMin            uint32
	tools                       string // esc.pl
	secretHex, keepHex, diskHex string
}

func newEscEnv(t *testing.T) *escEnv {
	s := newStack(t, stackOptions{FS: fsnodes.Options{AllowOther: true}})
	e := &escEnv{s: s, a: "esca", b: "escb", c: "escc"}

	e.can = s.env.TempDir(t)
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
	e.secretHex, e.keepHex = hex.EncodeToString([]byte(escSecretText)), hex.EncodeToString([]byte(escKeepText))
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

	e.tools = s.env.TempDir(t)
	must(t, os.Chmod(e.tools, 0o755))
	escWrite(t, filepath.Join(e.tools, "esc.pl"), escPerl, 0o755)

	if out, err := s.asUser(escAlice, `mkdir $M/esca $M/escc`); err != nil {
		t.Fatalf("alice makes her bots: %v %s", err, out)
	}
	if out, err := s.asUser(escBob, `mkdir $M/escb && printf 'bob-private\n' > $M/escb/data/note`); err != nil {
		t.Fatalf("bob makes his bot: %v %s", err, out)
	}
	for _, bot := range []string{e.a, e.b} {
		e.ctl(t, bot, "start")
	}
	t.Cleanup(func() {
		for _, bot := range []string{e.a, e.b} {
			if err := s.ctl(bot, "stop 1"); err != nil {
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
	e.expect(t, escAlice, "ok "+hex.EncodeToString([]byte(escPubText)), "read", e.data(e.a, "l-pub"))
	// ... and the root-only one is not reachable in any way.
	e.expect(t, escAlice, escErr(syscall.EACCES), "read", link)
	e.expect(t, escAlice, escErr(syscall.EACCES), "write", link, "PWN\n")
	e.expect(t, escAlice, escErr(syscall.EACCES), "append", link, "PWN\n")
	e.expect(t, escAlice, escErr(syscall.EACCES), "rdwr", link, "PWN\n")
	e.expect(t, escAlice, escErr(syscall.EACCES), "trunc", link)
	e.expect(t, escAlice, escErr(syscall.EACCES), "write", e.data(e.a, "l-pub"), "PWN\n")
	e.expect(t, escAlice, escErr(syscall.EACCES), "trunc", e.data(e.a, "l-pub"))
}

func escEtcSymlink(t *testing.T, e *escEnv) {
	var st unix.Stat_t
	if err := unix.Stat("/etc/shadow", &st); err != nil || st.Mode&0o004 != 0 {
		t.Fatalf("/etc/shadow is not private on this machine: %v %o", err, st.Mode)
	}
	e.sh(t, e.a, "ln -s /etc /data/l-etc")
	etc := e.data(e.a, "l-etc")
	e.expect(t, escAlice, escErr(syscall.EACCES), "read", etc+"/shadow")
	e.expect(t, escAlice, escErr(syscall.EACCES), "create", etc+"/esc-pwned", "PWN\n")
	e.expect(t, escAlice, escErr(syscall.EACCES), "mkdir", etc+"/esc-pwned-dir")
	e.expect(t, escAlice, escErr(syscall.EACCES), "append", etc+"/passwd", "pwn::0:0::/:/bin/sh\n")
	e.expect(t, escAlice, escErr(syscall.EACCES), "symlink", e.secret, etc+"/esc-pwned-link")
}

func escRelativeSymlink(t *testing.T, e *escEnv) {
	up := strings.Repeat("../", 24) // past / from anywhere under the mount
	e.sh(t, e.a, "ln -s "+up+strings.TrimPrefix(e.secret, "/")+" /data/rel-secret && "+
		"ln -s "+up+strings.TrimPrefix(e.sealed, "/")+" /data/rel-sealed && "+
		"ln -s ../../escb/data /data/rel-b && ln -s ../.. /data/rel-root && ln -s loop /data/loop && "+
		"mkdir -p /data/in/side && ln -s ../../../../escb /data/in/side/rel-b2")
	d := func(p string) string { return e.data(e.a, p) }
	e.expect(t, escAlice, escErr(syscall.EACCES), "read", d("rel-secret"))
	e.expect(t, escAlice, escErr(syscall.EACCES), "append", d("rel-secret"), "PWN\n")
	e.expect(t, escAlice, escErr(syscall.EACCES), "read", d("rel-sealed/keep"))
	e.expect(t, escAlice, escErr(syscall.EACCES), "create", d("rel-sealed/esc-pwned"), "PWN\n")
	e.expect(t, escAlice, escErr(syscall.EACCES), "read", d("rel-b/note"))
	e.expect(t, escAlice, escErr(syscall.EACCES), "ls", d("rel-b"))
	e.expect(t, escAlice, escErr(syscall.EACCES), "create", d("rel-b/esc-new"), "PWN\n")
	e.expect(t, escAlice, escErr(syscall.EACCES), "read", d("in/side/rel-b2/status"))
	// ../.. from data/ is the mount's root: the bots, by the mount's rules.
	e.expect(t, escAlice, "ok esca/escb/escc", "ls", d("rel-root"))
	e.expect(t, escAlice, escErr(syscall.EACCES), "read", d("rel-root/escb/data/note"))
	e.expect(t, escAlice, escErr(syscall.ELOOP), "read", d("loop"))
	e.expect(t, escAlice, escErr(syscall.ELOOP), "create", d("loop"), "x")
	// Inside the container the same links resolve in the container.
	if out, code := e.shCode(t, e.a, "cat /data/rel-secret /data/rel-sealed/keep"); code == 0 || strings.Contains(out, "CANARY") {
		t.Errorf("the container read through the relative links: %d %q", code, out)
	}
	if _, err := os.Lstat(filepath.Join(e.s.hostData(e.b), "esc-new")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a file appeared in bob's data: %v", err)
	}
}

func escOtherBotMount(t *testing.T, e *escEnv) {
	e.sh(t, e.a, "ln -s "+e.s.path(e.b, "data")+" /data/to-b && ln -s "+e.s.path(e.b)+" /data/to-b-dir")
	e.expect(t, escAlice, escErr(syscall.EACCES), "read", e.data(e.a, "to-b/note"))
	e.expect(t, escAlice, escErr(syscall.EACCES), "ls", e.data(e.a, "to-b"))
	e.expect(t, escAlice, escErr(syscall.EACCES), "create", e.data(e.a, "to-b/esc-new"), "PWN\n")
	e.expect(t, escAlice, escErr(syscall.EACCES), "write", e.data(e.a, "to-b-dir/ctl"), "stop\n")
	e.expect(t, escAlice, escErr(syscall.EACCES), "mkdir", e.data(e.a, "to-b-dir/snapshots/esc"))
	e.bobUntouched(t)
}

// The bot's host data dir is reachable by its path: a symlink in data/
// (or a plain path) leads a user to another user's files on the host,
// where the mount's 0700 bot dir does not stand in the way.
func escOtherBotHost(t *testing.T, e *escEnv) {
	e.sh(t, e.a, "ln -s "+e.s.hostData(e.b)+" /data/to-b-host")
	e.expect(t, escAlice, escErr(syscall.EACCES), "read", e.data(e.a, "to-b-host/note"))
	e.expect(t, escAlice, escErr(syscall.EACCES), "ls", e.data(e.a, "to-b-host"))
	e.expect(t, escAlice, escErr(syscall.EACCES), "create", e.data(e.a, "to-b-host/esc-new"), "PWN\n")
	e.expect(t, escAlice, escErr(syscall.EACCES), "read", filepath.Join(e.s.hostData(e.b), "note"))
	e.bobUntouched(t)
}

func escDangling(t *testing.T, e *escEnv) {
	target := filepath.Join(e.can, "created-through-link")
	e.sh(t, e.a, "ln -s "+target+" /data/dang && ln -s "+e.can+"/new-dir /data/dang-dir")
	e.expect(t, escAlice, escErr(syscall.EACCES), "create", e.data(e.a, "dang"), "PWN\n")
	e.expect(t, escAlice, escErr(syscall.EEXIST), "excl", e.data(e.a, "dang"))
	e.expect(t, escAlice, escErr(syscall.EEXIST), "mkdir", e.data(e.a, "dang"))
	e.expect(t, escAlice, escErr(syscall.ENOENT), "mkdir", e.data(e.a, "dang-dir/x"))
	e.expect(t, escAlice, escErr(syscall.ENOENT), "create", e.data(e.a, "dang-dir/x"), "PWN\n")
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
	escWantFile(t, filepath.Join(e.s.hostData(e.a), "victim"), "replaced\n")
	// Root renames onto the other one; and a link renamed keeps pointing
	// where it did.
	must(t, os.WriteFile(e.data(e.a, "newf2"), []byte("replaced2\n"), 0o644))
	must(t, os.Rename(e.data(e.a, "newf2"), e.data(e.a, "victim2")))
	escWantFile(t, filepath.Join(e.s.hostData(e.a), "victim2"), "replaced2\n")
	e.sh(t, e.a, "ln -s "+e.secret+" /data/victim3")
	e.expect(t, escAlice, "ok", "rename", e.data(e.a, "victim3"), e.data(e.a, "moved-link"))
	if got, err := os.Readlink(filepath.Join(e.s.hostData(e.a), "moved-link")); err != nil || got != e.secret {
		t.Errorf("the renamed link: %q %v", got, err)
	}
}

func escRenameInto(t *testing.T, e *escEnv) {
	e.sh(t, e.a, "ln -s "+e.sealed+" /data/l-sealed")
	e.expect(t, escAlice, "ok", "create", e.data(e.a, "mv-me"), "x\n")
	e.expect(t, escAlice, escErr(syscall.EXDEV), "rename", e.data(e.a, "mv-me"), e.data(e.a, "l-sealed/mv-me"))
	e.expect(t, escAlice, escErr(syscall.EXDEV), "rename", e.data(e.a, "l-sealed/keep"), e.data(e.a, "stolen"))
	if err := os.Rename(e.data(e.a, "mv-me"), e.data(e.a, "l-sealed", "mv-me")); errnoOf(err) != syscall.EXDEV {
		t.Errorf("root rename into the linked dir: %v, want EXDEV", err)
	}
	if err := os.Rename(e.data(e.a, "l-sealed", "keep"), e.data(e.a, "stolen")); errnoOf(err) != syscall.EXDEV {
		t.Errorf("root rename out of the linked dir: %v, want EXDEV", err)
	}
}

func escSetattrSymlink(t *testing.T, e *escEnv) {
	e.sh(t, e.a, "ln -s "+e.secret+" /data/attr-link")
	link := e.data(e.a, "attr-link")
	host := filepath.Join(e.s.hostData(e.a), "attr-link")
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
	e.expect(t, escAlice, escErr(syscall.EPERM), "chmod", "0666", link)
	e.expect(t, escAlice, escErr(syscall.EPERM), "utime", link)
	out, err := e.run(t, escAlice, 10*time.Second, "setfattr", "-h", "-n", "user.esc", "-v", "1", link)
	if err == nil || !strings.Contains(out, "ermission denied") && !strings.Contains(out, "ot permitted") {
		t.Errorf("setfattr -h on the link as the user: %v %q", err, out)
	}
	out, err = e.run(t, escAlice, 10*time.Second, "setfattr", "-n", "user.esc", "-v", "1", link)
	if err == nil || !strings.Contains(out, "ermission denied") {
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
	for name, val := range map[string][]byte{"security.capability": capv, "trusted.esc": []byte("1"), "security.esc": []byte("1")} {
		if err := unix.Setxattr(p, name, val, 0); err != unix.EOPNOTSUPP {
			t.Errorf("root setxattr %s through the mount: %v, want EOPNOTSUPP", name, err)
		}
		if _, err := unix.Lgetxattr(filepath.Join(e.s.hostData(e.a), "xattr-file"), name, make([]byte, 64)); err != unix.ENODATA {
			t.Errorf("%s on the host file: %v, want ENODATA", name, err)
		}
	}
	must(t, unix.Setxattr(p, "user.esc", []byte("1"), 0))
}

func escRaceFileSwap(t *testing.T, e *escEnv) {
	stop := e.race(t, e.a, "sw", "",
		`echo ok > /data/sw.t; chmod 666 /data/sw.t; mv -f /data/sw.t /data/sw; ln -s `+e.secret+` /data/sw.l; mv -f /data/sw.l /data/sw`, "")
	p := e.data(e.a, "sw")
	tally := e.loop(t, escAlice, 2*time.Second, []string{"read", p}, []string{"append", p, "PWN\n"}, []string{"write", p, "ok\n"})
	t.Logf("bot: %s; user: %v", stop(), tally)
	for k := range tally {
		if strings.Contains(k, e.secretHex) {
			t.Errorf("the user read the root-only canary through a swapped link: %q", k)
		}
	}
	escLive(t, tally, "read ok 6f6b0a", "read "+escErr(syscall.EACCES))
}

func escRaceDirSwap(t *testing.T, e *escEnv) {
	e.sh(t, e.a, "mkdir /data/swd && echo ok > /data/swd/keep && chmod 777 /data/swd")
	stop := e.race(t, e.a, "swd", "",
		`mv /data/swd /data/swd.x; ln -s `+e.sealed+` /data/swd; rm /data/swd; mv /data/swd.x /data/swd`, "")
	d := e.data(e.a, "swd")
	tally := e.loop(t, escAlice, 2*time.Second, []string{"create", d + "/a{i}", "PWN\n"}, []string{"mkdir", d + "/m{i}"},
		[]string{"read", d + "/keep"})
	t.Logf("bot: %s; user: %v", stop(), tally)
	for k := range tally {
		if strings.Contains(k, e.keepHex) {
			t.Errorf("the user read the root-only canary through a swapped dir: %q", k)
		}
	}
	escLive(t, tally, "create ok", "read ok 6f6b0a")
}

func escRaceHeldDir(t *testing.T, e *escEnv) {
	e.sh(t, e.a, "mkdir /data/hd")
	dfd, err := unix.Open(e.data(e.a, "hd"), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	must(t, err)
	defer unix.Close(dfd)
	stop := e.race(t, e.a, "hd", "",
		`mv /data/hd /data/hd.x; ln -s `+e.sealed+` /data/hd; usleep 300; rm /data/hd; mv /data/hd.x /data/hd`, "")
	tally := map[string]int{}
	for i, end := 0, time.Now().Add(2*time.Second); time.Now().Before(end); i++ {
		fd, err := unix.Openat(dfd, "r"+itoa(i), unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o644)
		if err == nil {
			unix.Close(fd)
		}
		tally["create "+escResult(err)]++
		tally["mkdir "+escResult(unix.Mkdirat(dfd, "rd"+itoa(i), 0o755))]++
		tally["fchmodat keep "+escResult(unix.Fchmodat(dfd, "keep", 0o666, 0))]++
		var st unix.Stat_t
		tally["fstatat keep "+escResult(unix.Fstatat(dfd, "keep", &st, unix.AT_SYMLINK_NOFOLLOW))]++
	}
	t.Logf("bot: %s; root: %v", stop(), tally)
	escLive(t, tally, "create ok")
}

func escRaceSetattr(t *testing.T, e *escEnv) {
	stop := e.race(t, e.a, "xf", "",
		`echo x > /data/xf.t; chown 20001:20001 /data/xf.t; chmod 666 /data/xf.t; mv -f /data/xf.t /data/xf; `+
			`ln -s `+e.pub+` /data/xf.l; mv -f /data/xf.l /data/xf`, "")
	p := e.data(e.a, "xf")
	tally := e.loop(t, escAlice, 1500*time.Millisecond, []string{"chmod", "0600", p}, []string{"utime", p}, []string{"trunc", p})
	out, err := e.run(t, escAlice, 20*time.Second, "/bin/sh", "-c",
		`n=0; while [ $n -lt 300 ]; do setfattr -n user.pwn -v 1 "$1" 2>/dev/null && echo ok; n=$((n+1)); done | wc -l`, "sh", p)
	t.Logf("bot: %s; user: %v; setfattr ok %s (%v)", stop(), tally, strings.TrimSpace(out), err)
	escLive(t, tally, "chmod ok", "chmod "+escErr(syscall.EPERM))
}

// memohfs must never open a fifo (or device) the bot makes: a reader in
// the bot counts every open for write of its fifo. A create that finds a
// fifo planted at its name (between the kernel's lookup and memohfs's
// openat) must not open it, nor chown it to the caller.
func escRaceCreate(t *testing.T, e *escEnv) {
	e.fifoReader(t, e.a, "F")
	stop := e.race(t, e.a, "cr", "",
		`ln /data/.F /data/cr 2>/dev/null; rm -f /data/cr; ln -s `+e.secret+` /data/cr 2>/dev/null; rm -f /data/cr`,
		e.fifoReaderEnd("F"))
	p := e.data(e.a, "cr")
	tally := e.loop(t, escAlice, 2*time.Second, []string{"create", p, "PWN\n"}, []string{"unlink", p})
	t.Logf("bot: %s; user: %v", stop(), tally)
	e.fifoUntouched(t, e.a, "F")
	escLive(t, tally, "create ok")
}

func escRaceTruncate(t *testing.T, e *escEnv) {
	e.fifoReader(t, e.a, "F2")
	stop := e.race(t, e.a, "tr", "",
		`echo x > /data/tr.t; chown 20001:20001 /data/tr.t; chmod 666 /data/tr.t; mv -f /data/tr.t /data/tr; `+
			`ln -f /data/.F2 /data/tr.f; mv -f /data/tr.f /data/tr`, e.fifoReaderEnd("F2"))
	p := e.data(e.a, "tr")
	tally := e.loop(t, escAlice, 2*time.Second, []string{"trunc", p}, []string{"chmod", "0666", p})
	t.Logf("bot: %s; user: %v", stop(), tally)
	e.fifoUntouched(t, e.a, "F2")
	escLive(t, tally, "trunc ok")
}

// The watcher adds an inotify watch on every new dir of data/ and walks
// it: a dir swapped for a symlink during that walk must not lead memohfs
// (root) to watch or list what the link points to.
func escRaceWatcher(t *testing.T, e *escEnv) {
	bait := e.s.env.TempDir(t)
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
	e.sh(t, e.a, `for d in 0 200 500 1000 2000 3000 5000 8000 12000 20000 0 1000 3000; do
		mv /data/wprep/w /data/w; usleep $d; mv /data/w /data/w.real; ln -s `+bait+` /data/w
		usleep 60000; rm /data/w; mv /data/w.real /data/wprep/w; usleep 60000
	done`)
	time.Sleep(300 * time.Millisecond)
	watched, err := escInotifyInodes()
	if err != nil {
		t.Fatal(err)
	}
	for ino, p := range inos {
		if watched[ino] {
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

func escDotDot(t *testing.T, e *escEnv) {
	m := e.s.mnt
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
		err := e.s.ctl(e.a, text)
		if errnoOf(err) != syscall.EINVAL {
			t.Errorf("%q > ctl: %v, want EINVAL", text, err)
		}
		if msg := e.s.read(e.a, "err"); !strings.Contains(msg, "name") {
			t.Errorf("%q > ctl: err says %q", text, msg)
		}
	}
	// The owner through the shell, the same.
	// /bin/echo: dash's builtin says "I/O error" for any failed write.
	out, err := e.s.asUser(escAlice, `/bin/echo 'snapshot ../../x' > $M/esca/ctl`)
	if err == nil || !strings.Contains(out, "Invalid argument") {
		t.Errorf("alice: snapshot ../../x: %v %q (err: %q)", err, out, e.s.read(e.a, "err"))
	}
	if after := e.snapDirs(t); after != before {
		t.Errorf("snapshot dirs changed: %s -> %s", before, after)
	}
	for _, p := range []string{"/tmp/esc-x", filepath.Join(e.s.root, "x"), filepath.Join(e.s.root, "snapshots", "x"),
		filepath.Join(e.s.root, "snapshots", "a")} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s exists: %v", p, err)
		}
	}
}

func escSnapshotNames(t *testing.T, e *escEnv) {
	before := e.snapDirs(t)
	for _, name := range []string{".x", "-x", "a b", `a\b`, "x\ny", "x:y", strings.Repeat("s", 129)} {
		e.expect(t, escAlice, escErr(syscall.EINVAL), "mkdir", e.s.path(e.a, "snapshots", name))
	}
	e.expect(t, escAlice, escErr(syscall.ENAMETOOLONG), "mkdir", e.s.path(e.a, "snapshots", strings.Repeat("s", 256)))
	if after := e.snapDirs(t); after != before {
		t.Errorf("snapshot dirs changed: %s -> %s", before, after)
	}
}

func escBotNames(t *testing.T, e *escEnv) {
	for _, name := range []string{"Bad", "a.b", "a b", "-x", "_x", ".x", "x\ny", "x:y", "ä", strings.Repeat("a", 64)} {
		e.expect(t, escAlice, escErr(syscall.EINVAL), "mkdir", e.s.path(name))
	}
	e.expect(t, escAlice, escErr(syscall.ENAMETOOLONG), "mkdir", e.s.path(strings.Repeat("a", 256)))
	ents, err := os.ReadDir(filepath.Join(e.s.root, "bots"))
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
	if err := os.Link(e.pub, e.data(e.a, "hl-pub")); errnoOf(err) != syscall.EXDEV {
		t.Errorf("root: link a host file into data/: %v, want EXDEV", err)
	}
	e.expect(t, escAlice, escErr(syscall.EXDEV), "link", e.pub, e.data(e.a, "hl-pub2"))
	if err := os.Link(e.s.path(e.b, "data", "note"), e.data(e.a, "hl-b")); errnoOf(err) != syscall.EXDEV {
		t.Errorf("root: link bob's file into alice's data/: %v, want EXDEV", err)
	}
	e.sh(t, e.a, "echo mine > /data/hl-src")
	if err := os.Link(e.data(e.a, "hl-src"), filepath.Join(e.can, "hl-out")); errnoOf(err) != syscall.EXDEV {
		t.Errorf("root: link a data/ file out of the mount: %v, want EXDEV", err)
	}
	e.expect(t, escAlice, escErr(syscall.EXDEV), "link", e.data(e.a, "hl-src"), "/tmp/esc-hl-out")
	ents, err := os.ReadDir(e.s.hostData(e.a))
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
	opts := escMountOptions(t, e.s.mnt)
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
	if err := os.Truncate(e.data(e.a, "bdev"), 0); errnoOf(err) != syscall.EINVAL {
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
		e.loopMaj, e.loopMin, e.s.hostData(e.a)))
	p := e.data(e.a, "bdev-host")
	e.expect(t, escAlice, escErr(syscall.EACCES), "read", p)
	e.expect(t, escAlice, escErr(syscall.EACCES), "rdwr", p, "PWN-THROUGH-HOST-PATH")
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
	// A reader through the mount is not connected to the bot's fifo.
	e.expect(t, escAlice, "ok ", "read", p)
	e.expect(t, escAlice, escErr(syscall.ENXIO), "wronb", p, "x")
	begin := time.Now()
	out, err := e.run(t, escAlice, 10*time.Second, "timeout", "-s", "KILL", "2", "cat", p)
	t.Logf("blocking cat through the mount: %v after %s: %q", err, time.Since(begin).Round(time.Millisecond), out)
	if strings.Contains(out, "BOTDATA") {
		t.Errorf("a reader through the mount got the bot's fifo data")
	}
	if _, err := os.ReadFile(e.s.path(e.a, "status")); err != nil {
		t.Errorf("memohfs after the fifo opens: %v", err)
	}
	must(t, os.WriteFile(filepath.Join(e.s.hostData(e.a), ".stop-fifo"), nil, 0o644))
	e.sh(t, e.a, "timeout 2 cat /data/fifo >/dev/null; true")
	t.Logf("bot: %s", stop())
}

func escSnapshotHostile(t *testing.T, e *escEnv) {
	e.sh(t, e.a, fmt.Sprintf(`mkdir /data/hostile && cd /data/hostile && ln -s %s l-secret && ln -s %s l-sealed &&
		ln -s /etc l-etc && ln -s %s rel-up && mkfifo fifo && mknod cdev c 1 5 && mknod bdev b %d %d &&
		echo plain > plain && ln -s %s /l-secret-rootfs && mknod /rootfs-bdev b %d %d && chmod 666 /rootfs-bdev`,
		e.secret, e.sealed, strings.Repeat("../", 24)+strings.TrimPrefix(e.sealed, "/"), e.loopMaj, e.loopMin,
		e.secret, e.loopMaj, e.loopMin))
	out, err := e.run(t, escAlice, 60*time.Second, "mkdir", e.s.path(e.a, "snapshots", "s-hostile"))
	if err != nil {
		t.Fatalf("alice takes the snapshot: %v %s (err: %s)", err, out, e.s.read(e.a, "err"))
	}
	view := e.s.path(e.a, "snapshots", "s-hostile", "data", "hostile")
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
	e.expect(t, escAlice, escErr(syscall.EACCES), "read", filepath.Join(view, "l-secret"))
	e.expect(t, escAlice, escErr(syscall.EACCES), "read", filepath.Join(view, "l-sealed", "keep"))
	// The bot's dir is root's 0755: the kernel refuses alice before
	// memohfs is asked; root gets as far as memohfs, which says EROFS.
	e.expect(t, escAlice, escErr(syscall.EACCES), "create", filepath.Join(view, "new"), "x")
	e.expect(t, escAlice, escErr(syscall.EACCES), "create", filepath.Join(view, "l-etc-new"), "x")
	e.expect(t, 0, escErr(syscall.EROFS), "create", filepath.Join(view, "new"), "x")
	e.expect(t, 0, escErr(syscall.EROFS), "create", filepath.Join(view, "l-etc-new"), "x")
	// The host copy holds links as links, and no canary bytes.
	copyDir, err := e.s.c.SnapshotData(t.Context(), e.a, "s-hostile")
	must(t, err)
	e.noCanaryBytes(t, copyDir)
	// The rootfs view: links shown as links, devices not opened.
	rootfs := e.s.path(e.a, "snapshots", "s-hostile", "rootfs")
	e.expect(t, escAlice, "ok "+e.secret, "readlink", filepath.Join(rootfs, "l-secret-rootfs"))
	e.expect(t, escAlice, escErr(syscall.EACCES), "read", filepath.Join(rootfs, "l-secret-rootfs"))
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
	host := filepath.Join(e.s.hostData(e.a), "hostile")
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
	e.expect(t, escAlice, escErr(syscall.EACCES), "read", e.data(e.a, "hostile", "l-secret"))
	e.noCanaryBytes(t, e.s.hostData(e.a))
}

func escSkills(t *testing.T, e *escEnv) {
	e.sh(t, e.a, "mkdir -p /data/.skills/real && echo real > /data/.skills/real/SKILL.md")
	e.sh(t, e.a, "mv /data/.skills /data/.skills.real && ln -s "+e.sealed+" /data/.skills")
	skills := e.s.path(e.a, "skills")
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
	e.expect(t, escAlice, escErr(syscall.EACCES), "read", e.data(e.a, ".skills", "keep"))
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
	host := filepath.Join(e.s.hostData(e.a), "suid-id")
	escCopy(t, "/usr/bin/id", host, 0o755)
	e.sh(t, e.a, "chmod 4755 /data/suid-id")
	var st unix.Stat_t
	must(t, unix.Stat(host, &st))
	if st.Mode&0o7777 != 0o4755 || st.Uid != 0 {
		t.Fatalf("the bot's setuid binary on the host: %o uid %d", st.Mode&0o7777, st.Uid)
	}
	// Control: the same binary elsewhere on this disk does run as root.
	ctlDir := e.s.env.TempDir(t)
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
	host := filepath.Join(e.s.hostData(e.a), "suid-id")
	if _, err := os.Lstat(host); err != nil {
		escCopy(t, "/usr/bin/id", host, 0o755)
		e.sh(t, e.a, "chmod 4755 /data/suid-id")
	}
	e.sh(t, e.a, "ln -s "+host+" /data/suid-host")
	out, err := e.run(t, escAlice, 10*time.Second, e.data(e.a, "suid-host"), "-u")
	if strings.TrimSpace(out) != itoa(escAlice) && !strings.Contains(fmt.Sprint(out, err), "ermission denied") {
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
	fd, err := unix.Open(e.s.hostData(e.b), unix.O_DIRECTORY|unix.O_RDONLY, 0)
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
	t.Cleanup(func() { os.RemoveAll(filepath.Join(e.s.hostData(e.b), "deep")) })
	begin := time.Now()
	out, err := e.run(t, 0, 60*time.Second, "find", e.s.path(e.b, "data", "deep"))
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
	if _, err := os.ReadFile(e.s.path(e.b, "status")); err != nil {
		t.Errorf("memohfs after the walk: %v", err)
	}
	// A snapshot of it: done, or refused cleanly; never half left behind.
	done := make(chan error, 1)
	go func() { done <- e.s.ctl(e.b, "snapshot s-deep") }()
	select {
	case err := <-done:
		t.Logf("snapshot of the deep chain: %v (err: %q)", err, strings.TrimSpace(e.s.read(e.b, "err")))
		if err != nil && errnoOf(err) != syscall.EIO {
			t.Errorf("snapshot of the deep chain: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("snapshot of the deep chain hung")
	}
	ents, _ := os.ReadDir(filepath.Join(e.s.root, "snapshots", e.b))
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
	host := e.s.hostData(e.c)
	created := filepath.Join(e.can, "created-by-rmdir")
	for name, target := range map[string]string{"l-secret": e.secret, "l-sealed": e.sealed, "l-dang": created, "l-keep": e.keep} {
		must(t, os.Symlink(target, filepath.Join(host, name)))
	}
	must(t, unix.Mkfifo(filepath.Join(host, "fifo"), 0o666))
	must(t, unix.Mknod(filepath.Join(host, "bdev"), unix.S_IFBLK|0o666, int(unix.Mkdev(e.loopMaj, e.loopMin))))
	e.ctl(t, e.c, "snapshot s1")
	out, err := e.run(t, escAlice, 60*time.Second, "rmdir", e.s.path(e.c))
	if err != nil {
		t.Fatalf("alice rmdir: %v %s (err: %s)", err, out, e.s.read(e.c, "err"))
	}
	if _, err := os.Lstat(host); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the data dir is still there: %v", err)
	}
	trash, _ := filepath.Glob(filepath.Join(e.s.root, "trash", e.c+"-*"))
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

// escPerl runs one file operation, or a timed loop of them, as whoever
// runs it, and prints `ok[ DATA]` or `errno N` (read data in hex). A loop
// (`loop SECONDS OP ARGS -- OP ARGS ...`, {i} the round) prints
// `OP RESULT<TAB>COUNT` lines.
const escPerl = `#!/usr/bin/perl
use strict;
use warnings;
use Fcntl;
use Time::HiRes qw(time);

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

if ($ARGV[0] eq "loop") {
	my (undef, $secs, @rest) = @ARGV;
	my @groups = ([]);
	for my $x (@rest) {
		if ($x eq "--") { push @groups, [] } else { push @{$groups[-1]}, $x }
	}
	my %tally;
	my $end = time() + $secs;
	for (my $i = 0; time() < $end; $i++) {
		for my $g (@groups) {
			my @x = map { my $s = $_; $s =~ s/\{i\}/$i/g; $s } @$g;
			$tally{$x[0] . " " . one(@x)}++;
		}
	}
	print "$_\t$tally{$_}\n" for sort keys %tally;
	exit 0;
}
print one(@ARGV), "\n";
`

func escErr(e syscall.Errno) string { return "errno " + itoa(int(e)) }

func escResult(err error) string {
	if err == nil {
		return "ok"
	}
	return escErr(errnoOf(err))
}

func (e *escEnv) data(bot string, p ...string) string {
	return e.s.path(append([]string{bot, "data"}, p...)...)
}

// run runs argv as uid (0: as root) with $M the mount, killed after
// timeout (then the error says "timed out").
func (e *escEnv) run(t *testing.T, uid uint32, timeout time.Duration, argv ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/bin:/bin:/usr/sbin:/sbin", "M=" + e.s.mnt, "HOME=/", "LC_ALL=C"}
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

// loop runs groups of operations as uid for d and tallies the results.
func (e *escEnv) loop(t *testing.T, uid uint32, d time.Duration, groups ...[]string) map[string]int {
	t.Helper()
	args := []string{"loop", strconv.FormatFloat(d.Seconds(), 'f', 3, 64)}
	for i, g := range groups {
		if i > 0 {
			args = append(args, "--")
		}
		args = append(args, g...)
	}
	out, err := e.run(t, uid, d+20*time.Second, append([]string{"/usr/bin/perl", filepath.Join(e.tools, "esc.pl")}, args...)...)
	if err != nil {
		t.Fatalf("uid %d loop: %v %s", uid, err, escTail(out, 500))
	}
	tally := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "\t")
		n, err := strconv.Atoi(v)
		if !ok || err != nil {
			t.Fatalf("loop output: %q", sc.Text())
		}
		tally[k] = n
	}
	return tally
}

// escLive logs (it does not fail: timing decides) when a race did not
// produce each of the outcomes that show it was live.
func escLive(t *testing.T, tally map[string]int, outcomes ...string) {
	t.Helper()
	for _, o := range outcomes {
		if tally[o] == 0 {
			t.Logf("note: the race never gave %q this time", o)
		}
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
	code, err := e.s.rt.Exec(ctx, bot, []string{"sh", "-c", script}, &stdout, &stderr)
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
	hostFlag := filepath.Join(e.s.hostData(bot), ".stop-"+name)
	os.Remove(hostFlag)
	script := pre + "\nn=0; while [ ! -e " + flag + " ] && [ $n -lt 1000000 ]; do " + body + "; n=$((n+1)); done\n" + post + "\necho rounds=$n"
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	done := make(chan string, 1)
	go func() {
		var stdout, stderr bytes.Buffer
		code, err := e.s.rt.Exec(ctx, bot, []string{"sh", "-c", script}, &stdout, &stderr)
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
		os.WriteFile(filepath.Join(e.s.hostData(bot), "."+name+"-stop"), nil, 0o644)
		e.shCode(t, bot, "timeout 2 sh -c ': > "+f+"'; true")
	})
}

// fifoReaderEnd is a race's post script that ends the reader.
func (e *escEnv) fifoReaderEnd(name string) string {
	f := "/data/." + name
	return ": > " + f + "-stop; timeout 2 sh -c ': > " + f + "'"
}

// fifoUntouched asserts memohfs never opened the bot's fifo, nor gave
// it to the caller.
func (e *escEnv) fifoUntouched(t *testing.T, bot, name string) {
	t.Helper()
	host := filepath.Join(e.s.hostData(bot), "."+name)
	b, err := os.ReadFile(host + "-opens")
	must(t, err)
	if n := strings.Count(string(b), "o\n"); n > 0 {
		t.Errorf("memohfs (root) opened the fifo the bot planted %d times", n)
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
	go func() { done <- e.s.ctl(bot, text) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s > %s/ctl: %v (err: %s)", text, bot, err, e.s.read(bot, "err"))
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("%s > %s/ctl hung", text, bot)
	}
}

func (e *escEnv) state(t *testing.T, bot string) string {
	t.Helper()
	st, err := control.ParseStatus(e.s.read(bot, "status"))
	if err != nil {
		t.Fatalf("status of %s: %v", bot, err)
	}
	return string(st.State)
}

func (e *escEnv) bobUntouched(t *testing.T) {
	t.Helper()
	escWantFile(t, filepath.Join(e.s.hostData(e.b), "note"), escBobText)
	for _, n := range []string{"esc-new"} {
		if _, err := os.Lstat(filepath.Join(e.s.hostData(e.b), n)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s in bob's data: %v", n, err)
		}
	}
	if st := e.state(t, e.b); st != "running" {
		t.Errorf("bob's bot: %s", st)
	}
	if ents, err := os.ReadDir(filepath.Join(e.s.root, "snapshots", e.b)); err == nil && len(ents) > 0 {
		t.Errorf("bob's bot has snapshots: %v", ents)
	}
}

// snapDirs lists the snapshot dirs on the host, all bots.
func (e *escEnv) snapDirs(t *testing.T) string {
	t.Helper()
	var out []string
	filepath.WalkDir(filepath.Join(e.s.root, "snapshots"), func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(e.s.root, p)
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
