package mount

import (
	"testing"

	"golang.org/x/sys/unix"
)

// bindPaths binds dir from over dir to with BindAt, through O_PATH fds it
// opens and closes, as the daemon does; the caller detaches the bind.
func bindPaths(t *testing.T, from, to string, readOnly bool) *Bind {
	t.Helper()
	s, err := unix.Open(from, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(s)
	d, err := unix.Open(to, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(d)
	b, err := BindAt(s, d, readOnly)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
