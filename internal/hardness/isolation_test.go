package hardness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/memohfs/memohfs/fsnodes"
	"github.com/memohfs/memohfs/internal/teststack"
	"golang.org/x/sys/unix"
)

// What the design says another user gets (fsnodes/root.go, bot.go and
// docs/semantics.md): /M is 1777 and lists every bot (Readdir asks no
// owner), so other users' bot names are visible and stat-able; each bot
// dir is 0700 to its owner and the kernel checks modes
// (default_permissions), so anything below it is EACCES at the path walk
// and never reaches the daemon; removing or renaming another user's bot
// in the sticky /M, and chmod/chown/utimes of its dir, are EPERM. Root
// (the daemon's own user and the test process) sees and reads all.

// isoChildEnv marks the test binary re-run as another user (see init):
// init runs before TestMain, which would start a containerd and a
// Postgres, so the child only drops to the user, tries every attempt of
// isoAttempts once and prints `name<TAB>errno<TAB>detail` lines.
const isoChildEnv = "MEMOHFS_HARDNESS_ISO_CHILD"

func init() {
	if os.Getenv(isoChildEnv) == "" {
		return
	}
	os.Exit(isoChild())
}

func isoChild() int {
	uid, err := strconv.Atoi(os.Getenv("ISO_UID"))
	if err != nil || uid <= 0 {
		fmt.Fprintln(os.Stderr, "iso child: want ISO_UID > 0")
		return 2
	}
	// Setgroups, Setgid and Setuid apply to every thread of the process.
	if err := syscall.Setgroups(nil); err != nil {
		fmt.Fprintln(os.Stderr, "iso child: setgroups:", err)
		return 2
	}
	if err := syscall.Setgid(uid); err != nil {
		fmt.Fprintln(os.Stderr, "iso child: setgid:", err)
		return 2
	}
	if err := syscall.Setuid(uid); err != nil {
		fmt.Fprintln(os.Stderr, "iso child: setuid:", err)
		return 2
	}
	if os.Geteuid() != uid || os.Getegid() != uid {
		fmt.Fprintln(os.Stderr, "iso child: still", os.Geteuid(), os.Getegid())
		return 2
	}
	x := isoTarget{m: os.Getenv("ISO_M"), victim: os.Getenv("ISO_VICTIM"), own: os.Getenv("ISO_OWN"),
		snap: os.Getenv("ISO_SNAP"), uid: uid}
	for _, a := range isoAttempts {
		detail, err := a.do(x)
		code := int(fileOpErrno(err))
		if err != nil && code == 0 {
			code = -1 // not an errno: the detail says what went wrong
			detail += " " + err.Error()
		}
		fmt.Printf("%s\t%d\t%s\n", a.name, code, strings.ReplaceAll(detail, "\n", `\n`))
	}
	return 0
}

// isoTarget is what an attempt works on: the victim's bot and the
// attacker's own bot in the mount m, and a snapshot both have.
type isoTarget struct {
	m, victim, own, snap string
	uid                  int
}

func (x isoTarget) v(p ...string) string {
	return filepath.Join(append([]string{x.m, x.victim}, p...)...)
}

func (x isoTarget) o(p ...string) string {
	return filepath.Join(append([]string{x.m, x.own}, p...)...)
}

// isoAttempt is one thing another user tries, and the errno it must get.
type isoAttempt struct {
	name string
	want syscall.Errno
	do   func(x isoTarget) (detail string, err error)
}

// isoNoSym is what attempts through a symlink must get instead on a
// nosymfollow mount (the default): the path walk stops at the link.
var isoNoSym = map[string]syscall.Errno{"read through own symlink": syscall.ELOOP}

func isoRead(p func(isoTarget) string) func(isoTarget) (string, error) {
	return func(x isoTarget) (string, error) {
		b, err := os.ReadFile(p(x))
		return fmt.Sprintf("%.40q", b), err
	}
}

func isoList(p func(isoTarget) string) func(isoTarget) (string, error) {
	return func(x isoTarget) (string, error) {
		es, err := os.ReadDir(p(x))
		names := make([]string, 0, len(es))
		for _, e := range es {
			names = append(names, e.Name())
		}
		return strings.Join(names, " "), err
	}
}

// isoWrite opens with flags and writes data (nothing when data is empty).
func isoWrite(p func(isoTarget) string, flags int, data string) func(isoTarget) (string, error) {
	return func(x isoTarget) (string, error) {
		f, err := os.OpenFile(p(x), flags, 0o644)
		if err != nil {
			return "open", err
		}
		if data != "" {
			_, err = f.WriteString(data)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return "opened", err
	}
}

// isoReadEvents opens events with flags and reads once at most: a reader
// at the end would wait.
func isoReadEvents(flags int) func(isoTarget) (string, error) {
	return func(x isoTarget) (string, error) {
		fd, err := unix.Open(x.v("events"), unix.O_RDONLY|unix.O_CLOEXEC|flags, 0)
		if err != nil {
			return "", err
		}
		defer unix.Close(fd)
		b := make([]byte, 4096)
		n, err := unix.Read(fd, b)
		return fmt.Sprintf("%.40q", b[:max(n, 0)]), err
	}
}

func isoDo(fn func(x isoTarget) error) func(isoTarget) (string, error) {
	return func(x isoTarget) (string, error) { return "", fn(x) }
}

func vp(p ...string) func(isoTarget) string { return func(x isoTarget) string { return x.v(p...) } }
func op(p ...string) func(isoTarget) string { return func(x isoTarget) string { return x.o(p...) } }

var (
	snapInfo = func(x isoTarget) string { return x.v("snapshots", x.snap, "info") }
	snapNote = func(x isoTarget) string { return x.v("snapshots", x.snap, "data", "note") }
)

// isoAttempts: first what the attacker may do (controls: their own bot
// works, the victim's name is visible), then what is refused.
var isoAttempts = []isoAttempt{
	// Allowed.
	{"ls /M", 0, isoList(func(x isoTarget) string { return x.m })},
	{"stat bot dir", 0, func(x isoTarget) (string, error) {
		var st syscall.Stat_t
		err := syscall.Stat(x.v(), &st)
		return fmt.Sprintf("uid=%d mode=%o", st.Uid, st.Mode), err
	}},
	{"open bot dir O_PATH", 0, isoDo(func(x isoTarget) error {
		fd, err := unix.Open(x.v(), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err == nil {
			unix.Close(fd)
		}
		return err
	})},
	{"own: ls bot", 0, isoList(op())},
	{"own: read status", 0, isoRead(op("status"))},
	{"own: write data", 0, isoWrite(op("data", "own-probe"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, "probe\n")},
	{"own: ls snapshots", 0, isoList(op("snapshots"))},

	// The bot dir.
	{"ls bot", syscall.EACCES, isoList(vp())},
	{"chdir bot", syscall.EACCES, isoDo(func(x isoTarget) error { return os.Chdir(x.v()) })},
	{"openat below O_PATH bot dir", syscall.EACCES, isoDo(func(x isoTarget) error {
		fd, err := unix.Open(x.v(), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("O_PATH open itself failed: %w", err)
		}
		defer unix.Close(fd)
		f, err := unix.Openat(fd, "status", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			unix.Close(f)
		}
		return err
	})},
	{"mkdir bot (taken)", syscall.EEXIST, isoDo(func(x isoTarget) error { return os.Mkdir(x.v(), 0o755) })},
	{"rmdir bot", syscall.EPERM, isoDo(func(x isoTarget) error { return syscall.Rmdir(x.v()) })},
	{"rename bot away", syscall.EPERM, isoDo(func(x isoTarget) error {
		return syscall.Rename(x.v(), filepath.Join(x.m, "stolen-"+x.victim))
	})},
	{"rename own bot over it", syscall.EPERM, isoDo(func(x isoTarget) error { return syscall.Rename(x.o(), x.v()) })},
	{"chmod bot dir", syscall.EPERM, isoDo(func(x isoTarget) error { return os.Chmod(x.v(), 0o777) })},
	{"chown bot dir", syscall.EPERM, isoDo(func(x isoTarget) error { return os.Chown(x.v(), x.uid, x.uid) })},
	{"utimes bot dir", syscall.EPERM, isoDo(func(x isoTarget) error {
		return os.Chtimes(x.v(), time.Unix(1, 0), time.Unix(1, 0))
	})},
	{"touch bot dir", syscall.EACCES, isoDo(func(x isoTarget) error {
		return unix.UtimesNanoAt(unix.AT_FDCWD, x.v(), nil, 0)
	})},
	{"setxattr bot dir", syscall.EACCES, isoDo(func(x isoTarget) error {
		return unix.Setxattr(x.v(), "user.iso", []byte("x"), 0)
	})},
	{"getxattr bot dir", syscall.EACCES, isoDo(func(x isoTarget) error {
		_, err := unix.Getxattr(x.v(), "user.iso", make([]byte, 64))
		return err
	})},

	// Synthetic files.
	{"stat status", syscall.EACCES, isoDo(func(x isoTarget) error { _, err := os.Stat(x.v("status")); return err })},
	{"read status", syscall.EACCES, isoRead(vp("status"))},
	{"open status O_TRUNC", syscall.EACCES, isoWrite(vp("status"), os.O_WRONLY|os.O_TRUNC, "")},
	{"read err", syscall.EACCES, isoRead(vp("err"))},
	{"open err O_TRUNC", syscall.EACCES, isoWrite(vp("err"), os.O_WRONLY|os.O_TRUNC, "")},
	{"read events", syscall.EACCES, isoReadEvents(0)},
	{"read events O_NONBLOCK", syscall.EACCES, isoReadEvents(unix.O_NONBLOCK)},
	{"read log", syscall.EACCES, isoRead(vp("log"))},
	{"read ctl", syscall.EACCES, isoRead(vp("ctl"))},
	{"ctl start", syscall.EACCES, isoWrite(vp("ctl"), os.O_WRONLY, "start\n")},
	{"ctl stop", syscall.EACCES, isoWrite(vp("ctl"), os.O_WRONLY, "stop 1\n")},
	{"ctl snapshot", syscall.EACCES, isoWrite(vp("ctl"), os.O_WRONLY, "snapshot evil\n")},
	{"ctl restore", syscall.EACCES, func(x isoTarget) (string, error) {
		return isoWrite(vp("ctl"), os.O_WRONLY, "restore "+x.snap+"\n")(x)
	}},
	{"ctl bad verb (would set err)", syscall.EACCES, isoWrite(vp("ctl"), os.O_WRONLY, "bogus\n")},
	{"open ctl O_TRUNC", syscall.EACCES, isoWrite(vp("ctl"), os.O_WRONLY|os.O_TRUNC, "")},
	{"truncate ctl", syscall.EACCES, isoDo(func(x isoTarget) error { return os.Truncate(x.v("ctl"), 0) })},

	// data/.
	{"ls data", syscall.EACCES, isoList(vp("data"))},
	{"read data file", syscall.EACCES, isoRead(vp("data", "note"))},
	{"append to data file", syscall.EACCES, isoWrite(vp("data", "note"), os.O_WRONLY|os.O_APPEND, "evil\n")},
	{"open data file O_TRUNC", syscall.EACCES, isoWrite(vp("data", "note"), os.O_WRONLY|os.O_TRUNC, "")},
	{"truncate data file", syscall.EACCES, isoDo(func(x isoTarget) error { return os.Truncate(x.v("data", "note"), 0) })},
	{"create in data", syscall.EACCES, isoWrite(vp("data", "evil"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, "evil\n")},
	{"mkdir in data", syscall.EACCES, isoDo(func(x isoTarget) error { return os.Mkdir(x.v("data", "evil-dir"), 0o777) })},
	{"symlink in data", syscall.EACCES, isoDo(func(x isoTarget) error { return os.Symlink("/etc/passwd", x.v("data", "evil-link")) })},
	{"unlink data file", syscall.EACCES, isoDo(func(x isoTarget) error { return os.Remove(x.v("data", "note")) })},
	{"chmod data file", syscall.EACCES, isoDo(func(x isoTarget) error { return os.Chmod(x.v("data", "note"), 0o666) })},
	{"setxattr data file", syscall.EACCES, isoDo(func(x isoTarget) error {
		return unix.Setxattr(x.v("data", "note"), "user.iso", []byte("x"), 0)
	})},
	{"removexattr data file", syscall.EACCES, isoDo(func(x isoTarget) error {
		return unix.Removexattr(x.v("data", "note"), "user.mark")
	})},
	{"statfs data", syscall.EACCES, isoDo(func(x isoTarget) error { var st unix.Statfs_t; return unix.Statfs(x.v("data"), &st) })},
	{"rename own file into data", syscall.EACCES, isoDo(func(x isoTarget) error {
		return syscall.Rename(x.o("data", "mine"), x.v("data", "mine"))
	})},
	{"rename data file out", syscall.EACCES, isoDo(func(x isoTarget) error {
		return syscall.Rename(x.v("data", "note"), x.o("data", "stolen"))
	})},
	{"hard link data file out", syscall.EACCES, isoDo(func(x isoTarget) error {
		return os.Link(x.v("data", "note"), x.o("data", "stolen-link"))
	})},
	{"read through own symlink", syscall.EACCES, func(x isoTarget) (string, error) {
		link := x.o("data", "peek")
		if err := os.Symlink(x.v("data", "note"), link); err != nil && !errors.Is(err, os.ErrExist) {
			return "making the symlink in own data/ failed:", errors.New(err.Error())
		}
		return isoRead(op("data", "peek"))(x)
	}},

	// skills/.
	{"ls skills", syscall.EACCES, isoList(vp("skills"))},
	{"read skill", syscall.EACCES, isoRead(vp("skills", "demo", "SKILL.md"))},
	{"create skill", syscall.EACCES, isoDo(func(x isoTarget) error { return os.Mkdir(x.v("skills", "evil"), 0o755) })},

	// snapshots/.
	{"ls snapshots", syscall.EACCES, isoList(vp("snapshots"))},
	{"read snapshot info", syscall.EACCES, isoRead(snapInfo)},
	{"ls snapshot data", syscall.EACCES, isoList(func(x isoTarget) string { return x.v("snapshots", x.snap, "data") })},
	{"read snapshot data file", syscall.EACCES, isoRead(snapNote)},
	{"write snapshot data file", syscall.EACCES, isoWrite(snapNote, os.O_WRONLY|os.O_TRUNC, "evil\n")},
	{"ls snapshot rootfs", syscall.EACCES, isoList(func(x isoTarget) string { return x.v("snapshots", x.snap, "rootfs") })},
	{"mkdir snapshots/x (take one)", syscall.EACCES, isoDo(func(x isoTarget) error { return os.Mkdir(x.v("snapshots", "evil"), 0o755) })},
	{"rmdir snapshots/<s> (drop it)", syscall.EACCES, isoDo(func(x isoTarget) error { return syscall.Rmdir(x.v("snapshots", x.snap)) })},
}

// isoResult is what one attempt got in the child.
type isoResult struct {
	errno  syscall.Errno
	other  bool // not an errno
	detail string
}

func errnoName(e syscall.Errno) string {
	if e == 0 {
		return "success"
	}
	if n := unix.ErrnoName(e); n != "" {
		return n
	}
	return strconv.Itoa(int(e))
}

// attempt runs every isoAttempt as uid against victim, with own as the
// attacker's own bot, in a child process of the test binary.
func (s *stack) attempt(uid uint32, victim, own, snap string) map[string]isoResult {
	s.T.Helper()
	exe, err := os.Executable()
	if err != nil {
		s.T.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(s.T.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe)
	cmd.Dir = "/"
	cmd.Env = []string{isoChildEnv + "=1", "ISO_UID=" + strconv.Itoa(int(uid)), "ISO_M=" + s.Mnt,
		"ISO_VICTIM=" + victim, "ISO_OWN=" + own, "ISO_SNAP=" + snap, "PATH=/usr/bin:/bin"}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		s.T.Fatalf("attempts as uid %d: %v\n%s%s", uid, err, out, stderr.String())
	}
	res := map[string]isoResult{}
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		f := strings.SplitN(line, "\t", 3)
		if len(f) != 3 {
			s.T.Fatalf("attempts as uid %d: bad line %q", uid, line)
		}
		code, err := strconv.Atoi(f[1])
		if err != nil {
			s.T.Fatalf("attempts as uid %d: bad line %q", uid, line)
		}
		r := isoResult{detail: f[2]}
		if code < 0 {
			r.other = true
		} else {
			r.errno = syscall.Errno(code)
		}
		res[f[0]] = r
	}
	return res
}

// checkAttempts asserts each attempt got exactly its errno.
func (s *stack) checkAttempts(who string, res map[string]isoResult) {
	s.T.Helper()
	refused := 0
	nosym := escMountOptions(s.T, s.Mnt)["nosymfollow"]
	for _, a := range isoAttempts {
		r, ok := res[a.name]
		want := a.want
		if e, ok := isoNoSym[a.name]; ok && nosym {
			want = e
		}
		switch {
		case !ok:
			s.T.Errorf("%s: %s: not tried", who, a.name)
		case r.other || r.errno != want:
			s.T.Errorf("%s: %s: got %s (%s), want %s", who, a.name, errnoName(r.errno), r.detail, errnoName(want))
		case want != 0:
			refused++
		}
	}
	s.T.Logf("%s: %d attempts refused with the expected errno, %d controls allowed", who, refused, len(isoAttempts)-refused)
}

// botState is everything of a bot another user's attempts could change,
// as root sees it.
type botState struct {
	Status, Err, Events string
	DirUID, DirMode     uint32
	Data                map[string]string // host data dir: path -> mode uid size content
	Snapshots           []string
	SnapInfo, SnapNote  string
	Bots                []string // ls /M
	Trash               []string
}

func (s *stack) botState(bot, snap string) botState {
	s.T.Helper()
	var st botState
	st.Status = s.ReadOrError(bot, "status")
	st.Err = s.ReadOrError(bot, "err")
	st.Events = s.readEventsNonblock(bot)
	var fi syscall.Stat_t
	must(s.T, syscall.Stat(s.Path(bot), &fi))
	st.DirUID, st.DirMode = fi.Uid, fi.Mode
	st.Data = map[string]string{}
	host := s.HostData(bot)
	must(s.T, filepath.Walk(host, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(host, p)
		sys := info.Sys().(*syscall.Stat_t)
		v := fmt.Sprintf("%o %d %d", sys.Mode, sys.Uid, sys.Size)
		if info.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			mark := make([]byte, 64)
			n, _ := unix.Lgetxattr(p, "user.mark", mark)
			v += " " + strconv.Quote(string(b)) + " user.mark=" + strconv.Quote(string(mark[:max(n, 0)]))
		}
		st.Data[rel] = v
		return nil
	}))
	st.Snapshots = s.names(bot, "snapshots")
	st.SnapInfo = s.ReadOrError(bot, "snapshots", snap, "info")
	st.SnapNote = s.ReadOrError(bot, "snapshots", snap, "data", "note")
	st.Bots = s.names()
	if es, err := os.ReadDir(filepath.Join(s.Root, "trash")); err == nil {
		for _, e := range es {
			st.Trash = append(st.Trash, e.Name())
		}
	}
	return st
}

// names lists a directory of the mount, as root.
func (s *stack) names(p ...string) []string {
	s.T.Helper()
	es, err := os.ReadDir(s.Path(p...))
	if err != nil {
		s.T.Fatalf("ls %s: %v", s.Path(p...), err)
	}
	out := []string{}
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

// readEventsNonblock reads the events file to its end without waiting.
func (s *stack) readEventsNonblock(bot string) string {
	s.T.Helper()
	fd, err := unix.Open(s.Path(bot, "events"), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		s.T.Fatalf("open events of %s: %v", bot, err)
	}
	defer unix.Close(fd)
	var out []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(fd, buf)
		if err != nil {
			s.T.Fatalf("read events of %s: %v", bot, err)
		}
		if n == 0 {
			return string(out)
		}
		out = append(out, buf[:n]...)
	}
}

func diffState(a, b botState) string {
	var d []string
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	for i := range va.NumField() {
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			d = append(d, fmt.Sprintf("%s: %q -> %q", va.Type().Field(i).Name,
				fmt.Sprint(va.Field(i).Interface()), fmt.Sprint(vb.Field(i).Interface())))
		}
	}
	return strings.Join(d, "\n")
}

// TestIsolation: with allow_other, user A's bot is refused to user B for
// read, write, ctl, snapshots and rmdir (EACCES, EPERM where the sticky
// /M or ownership decides), each refused attempt changes nothing, the
// same holds the other way round, and root sees and reads all.
func TestIsolation(t *testing.T) {
	s := newStack(t, teststack.Options{FS: fsnodes.Options{AllowOther: true}})
	const alice, bob = 21001, 21002
	const abot, bbot, snap = "abot", "bbot", "s1"

	// A makes, fills, starts and snapshots a bot, then leaves a refused
	// write so that err has something B's attempts must not overwrite.
	if out, err := s.AsUser(alice, `set -e
mkdir $M/abot
echo mine > $M/abot/data/note
echo a-own > $M/abot/data/mine
mkdir $M/abot/skills/demo
echo '# demo' > $M/abot/skills/demo/SKILL.md
echo start > $M/abot/ctl
echo 'snapshot s1' > $M/abot/ctl
! echo 'stop soon' > $M/abot/ctl`); err != nil {
		t.Fatalf("alice sets up her bot: %v\n%s", err, out)
	}
	must(t, unix.Setxattr(s.Path(abot, "data", "note"), "user.mark", []byte("a"), 0))
	if out, err := s.AsUser(bob, `set -e
mkdir $M/bbot
echo mine > $M/bbot/data/note
echo b-own > $M/bbot/data/mine
mkdir $M/bbot/skills/demo
echo '# demo' > $M/bbot/skills/demo/SKILL.md
echo 'snapshot s1' > $M/bbot/ctl
! echo 'stop soon' > $M/bbot/ctl`); err != nil {
		t.Fatalf("bob sets up his bot: %v\n%s", err, out)
	}
	must(t, unix.Setxattr(s.Path(bbot, "data", "note"), "user.mark", []byte("b"), 0))
	for bot, uid := range map[string]uint32{abot: alice, bbot: bob} {
		var st syscall.Stat_t
		must(t, syscall.Stat(s.Path(bot), &st))
		if st.Uid != uid || st.Mode != syscall.S_IFDIR|0o700 {
			t.Fatalf("%s: uid %d mode %o, want %d and dir 0700", bot, st.Uid, st.Mode, uid)
		}
	}
	a := s.Status(abot)
	if a.State != "running" || a.Pid == 0 {
		t.Fatalf("alice's bot: %+v", a)
	}
	if st, err := s.Control.Status(abot); err != nil || st.Owner != alice {
		t.Fatalf("alice's bot's owner: %d %v", st.Owner, err)
	}

	// Root sees and reads all of A's.
	if got := s.names(); !slices.Equal(got, []string{abot, bbot}) {
		t.Fatalf("root: ls /M = %v", got)
	}
	if got := s.ReadOrError(abot, "err"); !strings.Contains(got, "soon") {
		t.Fatalf("root: alice's err: %q", got)
	}
	if ev := s.readEventsNonblock(abot); !strings.Contains(ev, " start ") || !strings.Contains(ev, " snapshot ") {
		t.Fatalf("root: alice's events: %q", ev)
	}
	for p, want := range map[string]string{
		"data/note":              "mine\n",
		"skills/demo/SKILL.md":   "# demo\n",
		"snapshots/s1/data/note": "mine\n",
		"ctl":                    "start",
		"status":                 "state running",
		"snapshots/s1/info":      "name s1",
	} {
		b, err := os.ReadFile(s.Path(abot, p))
		if err != nil || !strings.Contains(string(b), want) {
			t.Errorf("root: read %s/%s: %v %.80q", abot, p, err, b)
		}
	}
	if _, err := os.ReadFile(s.Path(abot, "log")); err != nil {
		t.Errorf("root: read alice's log: %v", err)
	}
	for _, p := range []string{"", "data", "skills", "snapshots", "snapshots/s1/rootfs", "snapshots/s1/data"} {
		if len(s.names(abot, p)) == 0 {
			t.Errorf("root: ls %s/%s is empty", abot, p)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// What B sees, through the shell: every bot's name, nothing inside
	// A's.
	if out, err := s.AsUser(bob, `ls $M`); err != nil || out != "abot\nbbot\n" {
		t.Errorf("bob: ls $M: %v %q, want both names (/M lists every bot)", err, out)
	}
	for _, script := range []string{`cat $M/abot/status`, `echo stop > $M/abot/ctl`, `ls $M/abot/snapshots`, `cat $M/abot/data/note`} {
		if out, err := s.AsUser(bob, script); err == nil || !strings.Contains(out, "Permission denied") {
			t.Errorf("bob: %s: %v %q, want Permission denied", script, err, out)
		}
	}
	if out, err := s.AsUser(bob, `rmdir $M/abot`); err == nil || !strings.Contains(out, "Operation not permitted") {
		t.Errorf("bob: rmdir $M/abot: %v %q, want Operation not permitted (sticky /M)", err, out)
	}

	// B tries everything on A's bot; each attempt gets its errno and
	// changes nothing.
	before := s.botState(abot, snap)
	start := time.Now()
	res := s.attempt(bob, abot, bbot, snap)
	t.Logf("bob's %d attempts on alice's bot took %v", len(res), time.Since(start).Round(time.Millisecond))
	s.checkAttempts("bob on alice's bot", res)
	if got, want := res["ls /M"].detail, "abot bbot"; got != want {
		t.Errorf("bob: ls /M = %q, want %q", got, want)
	}
	if got, want := res["stat bot dir"].detail, fmt.Sprintf("uid=%d mode=%o", alice, syscall.S_IFDIR|0o700); got != want {
		t.Errorf("bob: stat of alice's bot: %s, want %s", got, want)
	}
	after := s.botState(abot, snap)
	if d := diffState(before, after); d != "" {
		t.Errorf("alice's bot changed under bob's attempts:\n%s", d)
	}
	if now := s.Status(abot); now.State != "running" || now.Pid != a.Pid {
		t.Errorf("alice's bot after bob's attempts: state %s pid %d, want running pid %d", now.State, now.Pid, a.Pid)
	}
	if got := s.ReadOrError(bbot, "data", "mine"); got != "b-own\n" {
		t.Errorf("bob's own file after the rename attempt: %q", got)
	}

	// The other way round: A on B's (stopped) bot.
	beforeB := s.botState(bbot, snap)
	s.checkAttempts("alice on bob's bot", s.attempt(alice, bbot, abot, snap))
	if d := diffState(beforeB, s.botState(bbot, snap)); d != "" {
		t.Errorf("bob's bot changed under alice's attempts:\n%s", d)
	}
	if now := s.Status(abot); now.State != "running" || now.Pid != a.Pid {
		t.Errorf("alice's bot after her attempts on bob's: state %s pid %d", now.State, now.Pid)
	}

	// Root may remove another user's bot; an owner their own.
	s.MustCtl(abot, "stop 1")
	must(t, syscall.Rmdir(s.Path(abot)))
	if out, err := s.AsUser(bob, `rmdir $M/bbot && ls $M`); err != nil || out != "" {
		t.Fatalf("bob removes his own bot: %v %q", err, out)
	}
}
