package mount

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestBindDetachStacked: Detach of a bind with another mount stacked on
// top of it must unmount the bind (and whatever sits on it), not just the
// mount on top: umount2("/proc/self/fd/N") resolves the magic link and
// then crosses onto the mounts stacked there, so one call takes the top
// one off (found by a helper: the bind leaked, and the daemon's repair
// pass then refused to bind again).
func TestBindDetachStacked(t *testing.T) {
	tmp, _ := filepath.EvalSymlinks(t.TempDir())
	src, other, target := filepath.Join(tmp, "src"), filepath.Join(tmp, "other"), filepath.Join(tmp, "target")
	for _, d := range []string{src, other, target} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b := bindPaths(t, src, target, false)
	if err := unix.Mount(other, target, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(target, unix.MNT_DETACH)
	defer unix.Unmount(target, unix.MNT_DETACH)
	if err := b.Detach(); err != nil {
		t.Fatal(err)
	}
	ms, _ := Submounts(target)
	if len(ms) != 0 {
		t.Fatalf("after Detach, still on %s: %+v", target, ms)
	}
}
