package fsnodes_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/memohfs/memohfs/fsnodes"
	"github.com/memohfs/memohfs/mount"
	"golang.org/x/sys/unix"
)

// TestTwoUsers: with allow_other each user makes, sees and drives only
// their own bot; root sees all.
func TestTwoUsers(t *testing.T) {
	s := newStack(t, fsnodes.Options{AllowOther: true})
	const alice, bob = 10001, 10002
	for uid, bot := range map[uint32]string{alice: "alice-bot", bob: "bob-bot"} {
		if out, err := s.AsUser(uid, `mkdir $M/`+bot+` && echo mine > $M/`+bot+`/data/note && cat $M/`+bot+`/status >/dev/null && echo 'snapshot s1' > $M/`+bot+`/ctl && ls $M/`+bot+`/snapshots`); err != nil {
			t.Fatalf("uid %d on its own bot: %v\n%s", uid, err, out)
		}
		fi, err := os.Stat(s.Path(bot))
		if err != nil || fi.Mode().Perm() != 0o700 || fi.Sys().(*syscall.Stat_t).Uid != uid {
			t.Fatalf("%s: %v %v", bot, fi.Mode(), err)
		}
		var st syscall.Stat_t
		must(t, syscall.Stat(filepath.Join(s.Root, "bots", bot, "note"), &st))
		if st.Uid != uid {
			t.Fatalf("a file uid %d made through the mount is owned by %d", uid, st.Uid)
		}
	}
	denied := map[string]string{
		"list":       `ls $M/alice-bot`,
		"status":     `cat $M/alice-bot/status`,
		"read data":  `cat $M/alice-bot/data/note`,
		"write data": `echo x > $M/alice-bot/data/note`,
		"ctl":        `echo stop > $M/alice-bot/ctl`,
		"snapshots":  `ls $M/alice-bot/snapshots`,
		"snapshot":   `mkdir $M/alice-bot/snapshots/s2`,
		"rmdir":      `rmdir $M/alice-bot`,
	}
	for what, script := range denied {
		out, err := s.AsUser(bob, script)
		if err == nil || !(strings.Contains(out, "ermission denied") || strings.Contains(out, "peration not permitted")) {
			t.Errorf("bob %s alice's bot: %v %q", what, err, out)
		}
	}
	if got := s.Read("alice-bot", "data", "note"); got != "mine\n" {
		t.Fatalf("alice's note after bob's attempts: %q", got)
	}
	if st := s.StatusFields("alice-bot"); st["snapshots"] != "1" {
		t.Fatalf("alice's bot changed: %v", st)
	}
	// Root sees and can read both.
	if out := s.MustSh(`ls $M && cat $M/bob-bot/data/note`); out != "alice-bot\nbob-bot\nmine\n" {
		t.Fatalf("root: %q", out)
	}
	// The owner can delete their own bot.
	if out, err := s.AsUser(alice, `rmdir $M/alice-bot`); err != nil {
		t.Fatalf("alice rmdir: %v %s", err, out)
	}
}

// TestRootACLCached: a user other than root walking through /M asks for
// /M's ACL once, not at every walk. The kernel never caches the ACL of a
// FUSE root inode (made before INIT); /M is a dir below the root, so it
// does (fsnodes/top.go). Counted at the server: with /M the root, each
// of the walks below was a GETXATTR.
func TestRootACLCached(t *testing.T) {
	s := newStack(t, fsnodes.Options{AllowOther: true})
	const walks = 200
	if out, err := s.AsUser(10001, `mkdir $M/walker`); err != nil {
		t.Fatalf("mkdir: %v\n%s", err, out)
	}
	s.Bound("walker")
	before := fsnodes.ACLAsks(s.FS)
	if before == 0 {
		t.Fatal("the kernel never asked for /M's ACL: the walk this test counts is not the one it means")
	}
	script := fmt.Sprintf(`i=0; while [ $i -lt %d ]; do [ -e $M/walker/data/missing ] && exit 1; i=$((i+1)); done`, walks)
	if out, err := s.AsUser(10001, script); err != nil {
		t.Fatalf("walks: %v\n%s", err, out)
	}
	// A second, at most, for each time /M's attributes time out (1 s)
	// and the kernel asks for them again.
	asks := fsnodes.ACLAsks(s.FS) - before
	t.Logf("%d walks through /M by uid 10001: %d asks for its ACL", walks, asks)
	if asks > 5 {
		t.Fatalf("%d walks through /M asked for its ACL %d times: the kernel does not cache it", walks, asks)
	}
	// The mount point holds a copy of the mount rooted at /bots: with the
	// mount's own flags (a copy keeps them).
	ms, err := mount.Submounts(s.Mnt)
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, m := range ms {
		if m.MountPoint != s.Mnt {
			continue
		}
		found++
		if m.Root != "/bots" || !m.HasOptions("nosuid", "nodev", "nosymfollow") {
			t.Errorf("the mount on %s: %s of the filesystem, options %v; want /bots, nosuid, nodev, nosymfollow", s.Mnt, m.Root, m.Options)
		}
	}
	if found != 1 {
		t.Errorf("%d mounts on %s, want 1", found, s.Mnt)
	}
}

// TestNoFollow: the daemon never follows a symlink planted in data/,
// whatever the kernel believes about the path.
func TestNoFollow(t *testing.T) {
	s := newStack(t, fsnodes.Options{})
	s.Mkbot("nf") // on this run's path before the first op
	host := filepath.Join(s.Root, "bots", "nf")
	outside := filepath.Join(s.Env.TempDir(t), "outside")
	must(t, os.MkdirAll(outside, 0o755))
	must(t, os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o600))

	// An open directory swapped for a symlink behind the mount.
	must(t, os.Mkdir(s.Path("nf", "data", "d"), 0o755))
	dfd, err := unix.Open(s.Path("nf", "data", "d"), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	must(t, err)
	defer unix.Close(dfd)
	must(t, os.Rename(filepath.Join(host, "d"), filepath.Join(host, "d.old")))
	must(t, os.Symlink(outside, filepath.Join(host, "d")))
	// The open directory is the directory it was, wherever the bot moved
	// it: what is made through it lands in d.old (as on a local disk), or
	// fails once the watcher told the kernel the name is gone (ENOENT: a
	// deleted dir); never in what the name holds now.
	if fd, err := unix.Openat(dfd, "pwned", unix.O_CREAT|unix.O_WRONLY, 0o644); err == nil {
		unix.Close(fd)
		if _, err := os.Lstat(filepath.Join(host, "d.old", "pwned")); err != nil {
			t.Errorf("a file made through the open dir is not in the dir itself: %v", err)
		}
	} else if !errors.Is(err, unix.ENOENT) {
		t.Errorf("create in the swapped dir: %v, want success in d.old or ENOENT", err)
	}
	if err := unix.Mkdirat(dfd, "pwned-dir", 0o755); err == nil {
		if _, err := os.Lstat(filepath.Join(host, "d.old", "pwned-dir")); err != nil {
			t.Errorf("a dir made through the open dir is not in the dir itself: %v", err)
		}
	} else if !errors.Is(err, unix.ENOENT) {
		t.Errorf("mkdir in the swapped dir: %v, want success in d.old or ENOENT", err)
	}
	if fd, err := unix.Openat(dfd, "secret", unix.O_RDONLY, 0); err == nil {
		unix.Close(fd)
		t.Error("open through a swapped-in symlink succeeded")
	}
	entries, _ := os.ReadDir(outside)
	if len(entries) != 1 {
		t.Fatalf("the outside dir was written through the mount: %v", entries)
	}

	// Setattr on a symlink node changes the link, never its target.
	must(t, os.Symlink(filepath.Join(outside, "secret"), filepath.Join(host, "link")))
	link := s.Path("nf", "data", "link")
	if err := unix.Fchmodat(unix.AT_FDCWD, link, 0o777, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		t.Error("chmod of a symlink itself succeeded (Linux has no symlink modes)")
	}
	must(t, unix.Lchown(link, 4242, 4242))
	must(t, unix.UtimesNanoAt(unix.AT_FDCWD, link, []unix.Timespec{{Sec: 1}, {Sec: 1}}, unix.AT_SYMLINK_NOFOLLOW))
	var st syscall.Stat_t
	must(t, syscall.Stat(filepath.Join(outside, "secret"), &st))
	if st.Mode&0o777 != 0o600 || st.Uid != 0 || st.Mtim.Sec == 1 {
		t.Fatalf("the link's target changed: mode %o uid %d mtime %d", st.Mode&0o777, st.Uid, st.Mtim.Sec)
	}
	must(t, syscall.Lstat(filepath.Join(host, "link"), &st))
	if st.Uid != 4242 || st.Mtim.Sec != 1 {
		t.Fatalf("lchown/lutimes did not reach the link itself: uid %d mtime %d", st.Uid, st.Mtim.Sec)
	}
	// A hard link to a symlink links the symlink.
	must(t, os.Link(link, s.Path("nf", "data", "hl")))
	must(t, syscall.Lstat(filepath.Join(host, "hl"), &st))
	if st.Mode&syscall.S_IFMT != syscall.S_IFLNK {
		t.Fatalf("hard link of a symlink is a %o", st.Mode&syscall.S_IFMT)
	}
	// Root may make device nodes (tar x of a root file system), but the
	// mount is nodev: one opens nothing.
	must(t, unix.Mknod(s.Path("nf", "data", "disk"), unix.S_IFBLK|0o600, int(unix.Mkdev(8, 0))))
	if fd, err := unix.Open(s.Path("nf", "data", "disk"), unix.O_RDONLY, 0); err == nil {
		unix.Close(fd)
		t.Error("a device node made in data/ could be opened through the mount")
	}
	// Through FUSE, ioctls do not reach host files with root's rights;
	// through a bind the kernel serves them as on the host's ext4.
	f, err := os.Create(s.Path("nf", "data", "plain"))
	must(t, err)
	defer f.Close()
	_, errMount := unix.IoctlGetInt(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if !s.Bound("nf") {
		if errMount == nil {
			t.Error("an ioctl reached the host file")
		}
		return
	}
	nf, err := os.Create(filepath.Join(s.Env.TempDir(t), "plain"))
	must(t, err)
	defer nf.Close()
	if _, errNative := unix.IoctlGetInt(int(nf.Fd()), unix.FS_IOC_GETFLAGS); errMount != errNative {
		t.Errorf("FS_IOC_GETFLAGS through the bind: %v, on ext4: %v", errMount, errNative)
	}
}

// TestSetuidClearedOnWrite: a write by another user clears setuid (and
// setgid with group execute) as ext4 does natively; a write by root keeps
// them; and no GETXATTR round trip is needed for it (HANDLE_KILLPRIV_V2).
func TestSetuidClearedOnWrite(t *testing.T) {
	s := newStack(t, fsnodes.Options{AllowOther: true})
	// The bot is the other user's; root makes setuid files in its data.
	if out, err := s.AsUser(10003, `mkdir $M/su`); err != nil {
		t.Fatalf("mkdir as 10003: %v %s", err, out)
	}
	native := filepath.Join(s.Env.TempDir(t), "native")
	must(t, os.MkdirAll(native, 0o777))
	must(t, os.Chmod(native, 0o777))
	for _, dir := range []string{native, s.Path("su", "data")} {
		for name, mode := range map[string]uint32{"suid": 0o4777, "sgid": 0o2777, "sgid-nox": 0o2767} {
			p := filepath.Join(dir, name)
			must(t, os.WriteFile(p, []byte("x"), 0o644))
			must(t, syscall.Chmod(p, mode))
		}
	}
	mode := func(p string) uint32 {
		var st syscall.Stat_t
		must(t, syscall.Stat(p, &st))
		return st.Mode & 07777
	}
	for _, name := range []string{"suid", "sgid", "sgid-nox"} {
		for _, dir := range []string{native, s.Path("su", "data")} {
			p := filepath.Join(dir, name)
			if out, err := s.AsUser(10003, `echo more >> `+p); err != nil {
				t.Fatalf("write as another user: %v %s", err, out)
			}
		}
		want, got := mode(filepath.Join(native, name)), mode(s.Path("su", "data", name))
		if got != want {
			t.Errorf("%s after a write by another user: %o through data/, %o on ext4", name, got, want)
		}
		host := mode(filepath.Join(s.Root, "bots", "su", name))
		if host != want {
			t.Errorf("%s on the host after a write through data/: %o, want %o", name, host, want)
		}
	}
	if m := mode(filepath.Join(native, "suid")); m != 0o777 {
		t.Fatalf("ext4 itself: %o (the comparison is void)", m)
	}
	// Root writes keep the bits, on ext4 and through data/.
	for _, dir := range []string{native, s.Path("su", "data")} {
		p := filepath.Join(dir, "root-suid")
		must(t, os.WriteFile(p, []byte("x"), 0o644))
		must(t, syscall.Chmod(p, 0o4755))
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		must(t, err)
		f.WriteString("more")
		f.Close()
		if m := mode(p); m != 0o4755 {
			t.Errorf("a root write in %s cleared setuid: %o", dir, m)
		}
	}
}

// TestPassthrough: on this machine kind (Linux >= 6.9, root) data/ file
// I/O is kernel passthrough: memohfs says so, and reading and writing a
// megabyte through data/ sends no READ or WRITE request to the daemon.
func TestPassthrough(t *testing.T) {
	var logs syncBuffer
	s := newStack(t, fsnodes.Options{Debug: true, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if mode := s.FS.DataIO(); mode != "passthrough" {
		t.Fatalf("data/ I/O mode %q, want passthrough", mode)
	}
	s.MustSh(`mkdir $M/pt`)
	p := s.Path("pt", "data", "big")
	blob := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	must(t, os.WriteFile(p, blob, 0o644))
	got, err := os.ReadFile(p)
	must(t, err)
	if !bytes.Equal(got, blob) {
		t.Fatal("read back differs")
	}
	if !strings.Contains(logs.String(), "PASSTHROUGH") {
		t.Fatalf("no open was answered with PASSTHROUGH:\n%s", tail(logs.String(), 3000))
	}
	for _, op := range []string{": READ ", ": WRITE "} {
		if strings.Contains(logs.String(), op) {
			t.Errorf("a%s request reached the daemon:\n%s", op, tail(logs.String(), 3000))
		}
	}
	// Turned off, it says why, and I/O goes through the daemon.
	s2 := newStack(t, fsnodes.Options{NoPassthrough: true})
	if mode := s2.FS.DataIO(); !strings.HasPrefix(mode, "fuse (") {
		t.Fatalf("mode with passthrough off: %q", mode)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
