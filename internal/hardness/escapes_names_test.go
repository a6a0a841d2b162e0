package hardness

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Attacks of TestEscapes (escapes_harness_test.go): names and paths: .. through the mount, bad snapshot and bot names,
// very long names and a chain deeper than PATH_MAX.

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
