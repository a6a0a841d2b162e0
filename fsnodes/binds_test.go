package fsnodes_test

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/memohfs/memohfs/fsnodes"
	"golang.org/x/sys/unix"
)

// mountsUnder lists the mount points at or below dir in our mount
// namespace, with their options.
func mountsUnder(t *testing.T, dir string) map[string]string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 {
			continue
		}
		mp := strings.ReplaceAll(fields[4], `\040`, " ")
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			if prev, ok := out[mp]; ok {
				out[mp] = prev + " + " + fields[5] // stacked
			} else {
				out[mp] = fields[5]
			}
		}
	}
	return out
}

// TestDataBind: with binds on, a bot's data/ is its host data dir bound
// over the FUSE node (nosymfollow, nodev, nosuid): the same inode as the
// host dir, an inotify watch on data/ hears what the bot writes in its
// container, restore shows the restored files through the same path
// with one bind (never the pre-restore dir), and rmdir and unmount leave
// no mount behind.
//
//	$ mkdir /memoh/b; grep /memoh/b/data /proc/self/mountinfo
//	... /memoh/b/data rw,nosuid,nodev,nosymfollow ...
func TestDataBind(t *testing.T) {
	s := newStackOn(t, fsnodes.Options{AllowOther: true, DataBinds: true})
	s.Mkbot("b")
	data := s.Path("b", "data")
	host := filepath.Join(s.Root, "bots", "b")
	opts, ok := mountsUnder(t, s.Mnt)[data]
	if !ok {
		t.Fatalf("no mount on %s: %v", data, mountsUnder(t, s.Mnt))
	}
	for _, o := range []string{"nosuid", "nodev", "nosymfollow"} {
		if !strings.Contains(opts, o) {
			t.Errorf("the bind's options %q lack %s", opts, o)
		}
	}
	var a, b syscall.Stat_t
	must(t, syscall.Stat(data, &a))
	must(t, syscall.Stat(host, &b))
	if a.Dev != b.Dev || a.Ino != b.Ino {
		t.Fatalf("data/ is %d:%d, the host data dir %d:%d", a.Dev, a.Ino, b.Dev, b.Ino)
	}
	if m := mountsUnder(t, s.Mnt)[s.Mnt]; !strings.Contains(m, "nosymfollow") {
		t.Errorf("the FUSE mount itself is not nosymfollow: %q", m)
	}

	// inotify on data/ hears a write made inside the bot.
	s.MustCtl("b", "start")
	in, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	must(t, err)
	defer unix.Close(in)
	if _, err := unix.InotifyAddWatch(in, data, unix.IN_CLOSE_WRITE|unix.IN_CREATE); err != nil {
		t.Fatal(err)
	}
	if out, code := s.Exec("b", "sh", "-c", "echo hi > /data/from-bot"); code != 0 {
		t.Fatalf("write in the bot: %d %s", code, out)
	}
	eventually(t, time.Minute, "an inotify event for the bot's write", func() bool {
		buf := make([]byte, 4096)
		n, _ := unix.Read(in, buf)
		return n > 0 && strings.Contains(string(buf[:n]), "from-bot")
	})

	// Restore: the same path shows the restored files, through one bind
	// of the dir that is live now.
	must(t, os.WriteFile(filepath.Join(data, "v"), []byte("1\n"), 0o644))
	s.MustCtl("b", "snapshot s1")
	must(t, os.WriteFile(filepath.Join(data, "v"), []byte("2\n"), 0o644))
	s.MustCtl("b", "restore s1")
	eventually(t, time.Minute, "data/ bound over the restored dir", func() bool {
		var a, b syscall.Stat_t
		return syscall.Stat(data, &a) == nil && syscall.Stat(host, &b) == nil && a.Dev == b.Dev && a.Ino == b.Ino
	})
	if got := s.Read("b", "data", "v"); got != "1\n" {
		t.Errorf("after restore, data/v is %q, want 1", got)
	}
	if opts := mountsUnder(t, s.Mnt)[data]; strings.Contains(opts, "+") {
		t.Errorf("binds stacked on data/ after restore: %q", opts)
	}
	if n := len(mountsUnder(t, s.Mnt)); n != 2 {
		t.Errorf("%d mounts under the mount after restore, want the mount and one bind: %v", n, mountsUnder(t, s.Mnt))
	}

	// rmdir leaves no bind.
	s.MustCtl("b", "stop")
	must(t, os.Remove(s.Path("b")))
	if m := mountsUnder(t, s.Mnt); len(m) != 1 {
		t.Errorf("mounts left after rmdir: %v", m)
	}
}

// TestSymlinkWalkLoops: with binds, the host follows no symlink under the
// mount: a walk through a link the bot made answers ELOOP, while readlink
// and lstat still see the link. (The FUSE-only mount is nosymfollow once
// the escape suites expect ELOOP: issue 11.)
func TestSymlinkWalkLoops(t *testing.T) {
	s := newStackOn(t, fsnodes.Options{AllowOther: true, DataBinds: true})
	s.Mkbot("l")
	if !s.Bound("l") {
		t.Fatal("data/ is not bound")
	}
	host := filepath.Join(s.Root, "bots", "l")
	must(t, os.Mkdir(filepath.Join(host, "real"), 0o755))
	must(t, os.WriteFile(filepath.Join(host, "real", "f"), []byte("x"), 0o644))
	must(t, os.Symlink("/etc", filepath.Join(host, "etc")))
	must(t, os.Symlink("real", filepath.Join(host, "rel")))
	for _, p := range []string{"etc/passwd", "rel/f"} {
		var err error
		eventually(t, time.Minute, p+" seen", func() bool {
			_, err = os.Stat(s.Path("l", "data", p))
			return !errors.Is(err, syscall.ENOENT)
		})
		if !errors.Is(err, syscall.ELOOP) {
			t.Errorf("stat data/%s: %v, want ELOOP", p, err)
		}
	}
	if target, err := os.Readlink(s.Path("l", "data", "etc")); err != nil || target != "/etc" {
		t.Errorf("readlink: %q %v", target, err)
	}
	if _, err := os.ReadFile(s.Path("l", "data", "real", "f")); err != nil {
		t.Errorf("a plain path: %v", err)
	}
}

// TestSnapshotViewBinds: with binds on, a snapshot's data/ and rootfs/
// views are the host dirs bound read-only over their FUSE nodes (the
// snapshot's copy of data/, its mounted rootfs view), each once it is
// first looked up, with nosymfollow, nodev and nosuid; they show the
// snapshot, not what changed since; a drop and an rmdir of the bot leave
// no mount behind, here or of the rootfs view on the host.
//
//	$ ls /memoh/b/snapshots/s1/data; grep snapshots/s1 /proc/self/mountinfo
//	... /memoh/b/snapshots/s1/data ro,nosuid,nodev,nosymfollow ...
//	... /memoh/b/snapshots/s1/rootfs ro,nosuid,nodev,nosymfollow ...
func TestSnapshotViewBinds(t *testing.T) {
	s := newStackOn(t, fsnodes.Options{AllowOther: true, DataBinds: true})
	s.Mkbot("v")
	host := filepath.Join(s.Root, "bots", "v")
	must(t, os.WriteFile(filepath.Join(host, "f"), []byte("one\n"), 0o644))
	must(t, os.Symlink("/etc", filepath.Join(host, "etc")))
	s.MustCtl("v", "snapshot s1")
	must(t, os.WriteFile(filepath.Join(host, "f"), []byte("two\n"), 0o644))

	var mnt syscall.Stat_t
	must(t, syscall.Stat(s.Mnt, &mnt))
	views := func(snap string) (string, string) {
		return s.Path("v", "snapshots", snap, "data"), s.Path("v", "snapshots", snap, "rootfs")
	}
	data, rootfs := views("s1")
	for _, p := range []string{data, rootfs} {
		if _, err := os.Stat(p); err != nil { // the first lookup asks for the bind
			t.Fatal(err)
		}
	}
	waitMounted := func(what string, paths ...string) {
		t.Helper()
		eventually(t, time.Minute, what, func() bool {
			m := mountsUnder(t, s.Mnt)
			for _, p := range paths {
				if _, ok := m[p]; !ok {
					return false
				}
			}
			return true
		})
	}
	waitMounted("both views of s1 bound", data, rootfs)
	m := mountsUnder(t, s.Mnt)
	for _, p := range []string{data, rootfs} {
		for _, o := range []string{"ro", "nosuid", "nodev", "nosymfollow"} {
			if !strings.Contains(","+m[p]+",", ","+o+",") {
				t.Errorf("the bind on %s has options %q, lacking %s", p, m[p], o)
			}
		}
		if strings.Contains(m[p], "+") {
			t.Errorf("binds stacked on %s: %q", p, m[p])
		}
		var st syscall.Stat_t
		must(t, syscall.Stat(p, &st))
		if st.Dev == mnt.Dev {
			t.Errorf("%s is still the FUSE node", p)
		}
	}
	want, err := s.Control.SnapshotData(t.Context(), "v", "s1")
	must(t, err)
	var a, b syscall.Stat_t
	must(t, syscall.Stat(data, &a))
	must(t, syscall.Stat(want, &b))
	if a.Dev != b.Dev || a.Ino != b.Ino {
		t.Errorf("the data view shows %d:%d, the snapshot's copy %s is %d:%d", a.Dev, a.Ino, want, b.Dev, b.Ino)
	}
	if got, err := os.ReadFile(filepath.Join(data, "f")); err != nil || string(got) != "one\n" {
		t.Errorf("the data view's f: %q %v, want the snapshot's %q", got, err, "one\n")
	}
	if _, err := os.Stat(filepath.Join(data, "etc", "passwd")); !errors.Is(err, syscall.ELOOP) {
		t.Errorf("a walk through the snapshot's symlink: %v, want ELOOP", err)
	}
	if err := os.WriteFile(filepath.Join(data, "new"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("create in the data view: %v, want EROFS", err)
	}
	if _, err := os.Stat(filepath.Join(rootfs, "bin")); err != nil {
		t.Errorf("the rootfs view: %v", err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "new"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("create in the rootfs view: %v, want EROFS", err)
	}

	// Dropped: no bind stays, and the rootfs view is unmounted on the
	// host as well (nothing holds it).
	viewMounts := func(snap string) []string {
		var out []string
		for mp := range mountsUnder(t, "") { // every mount
			if strings.HasSuffix(mp, "/views/v/"+snap) || strings.Contains(mp, "/v/snapshots/"+snap+"/") {
				out = append(out, mp)
			}
		}
		return out
	}
	if len(viewMounts("s1")) < 3 {
		t.Fatalf("want the host's rootfs view and two binds of s1: %v", viewMounts("s1"))
	}
	must(t, os.Remove(s.Path("v", "snapshots", "s1")))
	if left := viewMounts("s1"); len(left) > 0 {
		t.Errorf("mounts of s1 left after its drop: %v", left)
	}

	// Only a view looked up is bound: listing snapshots/ and reading a
	// snapshot's info mounts nothing, and data/ alone does not bring
	// rootfs/ (the rootfs view is an overlay mount of its own).
	s.MustCtl("v", "snapshot s2")
	data, rootfs = views("s2")
	if _, err := os.ReadDir(s.Path("v", "snapshots")); err != nil {
		t.Fatal(err)
	}
	s.Read("v", "snapshots", "s2", "info")
	if _, err := os.ReadDir(data); err != nil {
		t.Fatal(err)
	}
	waitMounted("s2's data view bound", data)
	if left := viewMounts("s2"); len(left) != 1 {
		t.Errorf("with only s2's data/ looked up, mounts of s2: %v, want its one bind", left)
	}

	// rmdir of the bot takes the views' binds with data/'s.
	if _, err := os.ReadDir(rootfs); err != nil {
		t.Fatal(err)
	}
	waitMounted("both views of s2 bound", data, rootfs)
	must(t, os.Remove(s.Path("v")))
	if m := mountsUnder(t, s.Mnt); len(m) != 1 {
		t.Errorf("mounts left after rmdir: %v", m)
	}
	if left := viewMounts("s2"); len(left) > 0 {
		t.Errorf("mounts of s2 left after rmdir: %v", left)
	}
}
