package mount

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/memohfs/memohfs/internal/testenv"
	"golang.org/x/sys/unix"
)

// TestMountinfoSubmounts: a real bind (BindAt, in a temp dir whose names
// have a space, a tab and a newline) is listed by Submounts with its
// mount point and root as they are, the device and fs type of the dir it
// shows, the mount id statx gives, and nosymfollow, nodev and nosuid; a
// read-only one says ro; a mount stacked inside it is listed after it, a
// sibling whose name only starts with the same bytes is not; once
// detached, none is listed.
func TestMountinfoSubmounts(t *testing.T) {
	testenv.Get(t)
	if os.Geteuid() != 0 {
		t.Fatal("binds need root: run the tests as root")
	}
	tmp, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(tmp, "src dir")
	target := filepath.Join(tmp, "t a\tb\nc")
	sibling := target + "x"
	for _, d := range []string{filepath.Join(src, "sub"), target, sibling} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var binds []*Bind
	bind := func(from, to string, ro bool) *Bind {
		t.Helper()
		b := bindPaths(t, from, to, ro)
		binds = append(binds, b)
		return b
	}
	t.Cleanup(func() {
		for i := len(binds) - 1; i >= 0; i-- {
			binds[i].Detach()
		}
	})
	mntID := func(p string) uint64 {
		t.Helper()
		var stx unix.Statx_t
		if err := unix.Statx(unix.AT_FDCWD, p, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &stx); err != nil {
			t.Fatal(err)
		}
		return stx.Mnt_id
	}
	var srcSt unix.Stat_t
	if err := unix.Stat(src, &srcSt); err != nil {
		t.Fatal(err)
	}
	// The mount src lives on: its fs type is what the bind shows.
	all, err := Submounts("/")
	if err != nil {
		t.Fatal(err)
	}
	var home *MountInfo
	for i := range all {
		if uint64(all[i].ID) == mntID(src) {
			home = &all[i]
		}
	}
	if home == nil {
		t.Fatalf("the mount of %s (id %d) is not in mountinfo", src, mntID(src))
	}

	if got, err := Submounts(target); err != nil || len(got) != 0 {
		t.Fatalf("before any bind: %v %v", got, err)
	}
	outer := bind(src, target, false)
	bind(src, sibling, true)
	bind(tmp, filepath.Join(target, "sub"), true)

	got, err := Submounts(target)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].MountPoint != target || got[1].MountPoint != filepath.Join(target, "sub") {
		t.Fatalf("Submounts(%q) = %+v, want the bind and the one inside it", target, got)
	}
	m := got[0]
	if m.Dev != srcSt.Dev || m.FSType != home.FSType || m.Source != home.Source {
		t.Errorf("bind: dev %d fstype %q source %q, want %d %q %q", m.Dev, m.FSType, m.Source, srcSt.Dev, home.FSType, home.Source)
	}
	if !strings.HasSuffix(m.Root, "/src dir") {
		t.Errorf("bind root %q, want the src dir", m.Root)
	}
	if uint64(m.ID) != mntID(target) || uint64(m.Parent) != mntID(tmp) {
		t.Errorf("bind id %d parent %d, statx says %d (parent %d)", m.ID, m.Parent, mntID(target), mntID(tmp))
	}
	if !m.HasOptions("nosymfollow", "nodev", "nosuid", "rw") || m.HasOptions("ro") {
		t.Errorf("bind options %v, want rw, nosymfollow, nodev, nosuid", m.Options)
	}
	if in := got[1]; in.Parent != m.ID || !in.HasOptions("ro", "nosymfollow") {
		t.Errorf("the bind inside: parent %d options %v, want parent %d, ro and nosymfollow", in.Parent, in.Options, m.ID)
	}
	sib, err := Submounts(sibling)
	if err != nil || len(sib) != 1 || !sib[0].HasOptions("ro", "nodev", "nosuid", "nosymfollow") {
		t.Fatalf("Submounts(sibling) = %+v %v, want the read-only bind", sib, err)
	}

	if err := outer.Detach(); err != nil {
		t.Fatal(err)
	}
	if got, err := Submounts(target); err != nil || len(got) != 0 {
		t.Fatalf("after detach: %+v %v, want none", got, err)
	}
	if sib, err := Submounts(sibling); err != nil || len(sib) != 1 {
		t.Fatalf("after detaching the other: sibling %+v %v, want its bind", sib, err)
	}
}

// TestMountinfoParse: escapes come back, optional fields are skipped,
// and a malformed line is an error.
func TestMountinfoParse(t *testing.T) {
	in := `36 35 98:0 /mnt1 /mnt\0402\134x rw,noatime master:1 shared:7 - ext3 /dev/root rw,errors=continue
37 36 0:52 / /m\012n rw,nosuid - fuse.memohfs memohfs rw,user_id=0
`
	got, err := ParseMountinfo(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d mounts, want 2", len(got))
	}
	a, b := got[0], got[1]
	if a.ID != 36 || a.Parent != 35 || a.Dev != unix.Mkdev(98, 0) || a.Root != "/mnt1" || a.MountPoint != `/mnt 2\x` ||
		a.FSType != "ext3" || a.Source != "/dev/root" || !a.HasOptions("rw", "noatime") || a.HasOptions("nosuid") {
		t.Errorf("first: %+v", a)
	}
	if b.MountPoint != "/m\nn" || b.FSType != "fuse.memohfs" || b.Dev != unix.Mkdev(0, 52) {
		t.Errorf("second: %+v", b)
	}
	for _, bad := range []string{"36 35 98:0 /mnt1 /mnt2 rw", "x 35 98:0 / / rw - ext4 /dev/a rw", "36 35 98 / / rw - ext4 /dev/a rw"} {
		if _, err := ParseMountinfo(strings.NewReader(bad + "\n")); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
