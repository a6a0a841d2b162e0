package mount

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/memohfs/memohfs/internal/testenv"
	"golang.org/x/sys/unix"
)

// TestUmountDetachSubmounts: DetachSubmounts (what `memohfs umount` does
// before the unmount) detaches each top mount under the mount point, a
// tmpfs and a BindAt bind, taking the mount nested inside one with it
// without naming it, and says 2; the mount on dir stays, and so does a
// sibling's whose name only starts with dir's. A second call, and a call
// on a dir with nothing mounted, detach nothing and are no error.
func TestUmountDetachSubmounts(t *testing.T) {
	testenv.Get(t)
	if os.Geteuid() != 0 {
		t.Fatal("mounts need root: run the tests as root")
	}
	tmp, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir, sibling, src := filepath.Join(tmp, "mnt"), filepath.Join(tmp, "mntx"), filepath.Join(tmp, "src")
	for _, d := range []string{dir, sibling, src} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, top := range []string{dir, sibling} {
			ms, _ := Submounts(top)
			for i := len(ms) - 1; i >= 0; i-- {
				unix.Unmount(ms[i].MountPoint, unix.MNT_DETACH)
			}
		}
	})
	tmpfs := func(at string) {
		t.Helper()
		if err := os.MkdirAll(at, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount("tmpfs", at, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatal(err)
		}
	}
	tmpfs(dir)
	tmpfs(sibling)
	tmpfs(filepath.Join(dir, "a", "data"))
	tmpfs(filepath.Join(dir, "a", "data", "inner")) // inside the bot's data: never named
	target := filepath.Join(dir, "b", "data")
	if err := os.MkdirAll(target, 0o755); err != nil {
		t.Fatal(err)
	}
	b := bindPaths(t, src, target, false)
	defer b.Detach()

	if n, err := DetachSubmounts(dir + "/"); n != 2 || err != nil {
		t.Fatalf("DetachSubmounts = %d, %v; want 2, nil", n, err)
	}
	ms, err := Submounts(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || ms[0].MountPoint != dir {
		t.Fatalf("after DetachSubmounts, under %s: %+v; want only its own mount", dir, ms)
	}
	if ms, _ := Submounts(sibling); len(ms) != 1 {
		t.Fatalf("the sibling %s lost its mount: %+v", sibling, ms)
	}
	if n, err := DetachSubmounts(dir); n != 0 || err != nil {
		t.Fatalf("DetachSubmounts again = %d, %v; want 0, nil", n, err)
	}
	if n, err := DetachSubmounts(src); n != 0 || err != nil {
		t.Fatalf("DetachSubmounts of a dir with nothing mounted = %d, %v; want 0, nil", n, err)
	}
}
