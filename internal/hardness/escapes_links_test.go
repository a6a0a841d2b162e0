package hardness

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Attacks of TestEscapes (escapes_harness_test.go): symlinks and hard links the bot plants in data/ (and the skills view over
// one), followed by users through the mount.

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
	waitFor(t, time.Minute, "skills/real/SKILL.md readable after .skills is back", func() bool {
		b, err := os.ReadFile(filepath.Join(skills, "real", "SKILL.md"))
		got = fmt.Sprintf("%q %v", b, err)
		return err == nil
	})
	if got != `"real\n" <nil>` {
		t.Errorf("skills/real/SKILL.md after .skills is back: %s", got)
	}
}
