package hardness

import (
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

// Attacks of TestEscapes (escapes_harness_test.go): memohfs copying or moving a hostile tree of the bot's: snapshot,
// restore, and rmdir (to the trash).

func escSnapshotHostile(t *testing.T, e *escEnv) {
	e.sh(t, e.a, fmt.Sprintf(`mkdir /data/hostile && cd /data/hostile && ln -s %s l-secret && ln -s %s l-sealed &&
		ln -s /etc l-etc && ln -s %s rel-up && mkfifo fifo && mknod cdev c 1 5 && mknod bdev b %d %d &&
		echo plain > plain && ln -s %s /l-secret-rootfs && mknod /rootfs-bdev b %d %d && chmod 666 /rootfs-bdev`,
		e.secret, e.sealed, strings.Repeat("../", 24)+strings.TrimPrefix(e.sealed, "/"), e.loopMaj, e.loopMin,
		e.secret, e.loopMaj, e.loopMin))
	out, err := e.run(t, escAlice, 60*time.Second, "mkdir", e.s.Path(e.a, "snapshots", "s-hostile"))
	if err != nil {
		t.Fatalf("alice takes the snapshot: %v %s (err: %s)", err, out, e.s.ReadOrError(e.a, "err"))
	}
	view := e.s.Path(e.a, "snapshots", "s-hostile", "data", "hostile")
	if e.binds {
		// The views are bound once the snapshot is first looked up.
		for _, v := range []string{"data", "rootfs"} {
			p := e.s.Path(e.a, "snapshots", "s-hostile", v)
			waitFor(t, time.Minute, "the "+v+" view bound", func() bool {
				var st, mnt unix.Stat_t
				return unix.Stat(e.s.Mnt, &mnt) == nil && unix.Stat(p, &st) == nil && st.Dev != mnt.Dev
			})
		}
	}
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
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "read", filepath.Join(view, "l-secret"))
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "read", filepath.Join(view, "l-sealed", "keep"))
	// The bot's dir is root's 0755. Through FUSE the kernel refuses
	// alice before memohfs is asked; root gets as far as memohfs, which
	// says EROFS. Bound, the view is a read-only mount: the kernel says
	// EROFS before it checks permission, to alice as to root.
	aliceCreate := escErr(syscall.EACCES)
	if e.binds {
		aliceCreate = escErr(syscall.EROFS)
	}
	e.expect(t, escAlice, aliceCreate, "create", filepath.Join(view, "new"), "x")
	e.expect(t, escAlice, aliceCreate, "create", filepath.Join(view, "l-etc-new"), "x")
	e.expect(t, 0, escErr(syscall.EROFS), "create", filepath.Join(view, "new"), "x")
	e.expect(t, 0, escErr(syscall.EROFS), "create", filepath.Join(view, "l-etc-new"), "x")
	// The host copy holds links as links, and no canary bytes.
	copyDir, err := e.s.Control.SnapshotData(t.Context(), e.a, "s-hostile")
	must(t, err)
	e.noCanaryBytes(t, copyDir)
	// The rootfs view: links shown as links, devices not opened.
	rootfs := e.s.Path(e.a, "snapshots", "s-hostile", "rootfs")
	e.expect(t, escAlice, "ok "+e.secret, "readlink", filepath.Join(rootfs, "l-secret-rootfs"))
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "read", filepath.Join(rootfs, "l-secret-rootfs"))
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
	host := filepath.Join(e.s.HostData(e.a), "hostile")
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
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "read", e.data(e.a, "hostile", "l-secret"))
	e.noCanaryBytes(t, e.s.HostData(e.a))
}

func escRmdir(t *testing.T, e *escEnv) {
	host := e.s.HostData(e.c)
	created := filepath.Join(e.can, "created-by-rmdir")
	for name, target := range map[string]string{"l-secret": e.secret, "l-sealed": e.sealed, "l-dang": created, "l-keep": e.keep} {
		must(t, os.Symlink(target, filepath.Join(host, name)))
	}
	must(t, unix.Mkfifo(filepath.Join(host, "fifo"), 0o666))
	must(t, unix.Mknod(filepath.Join(host, "bdev"), unix.S_IFBLK|0o666, int(unix.Mkdev(e.loopMaj, e.loopMin))))
	e.ctl(t, e.c, "snapshot s1")
	out, err := e.run(t, escAlice, 60*time.Second, "rmdir", e.s.Path(e.c))
	if err != nil {
		t.Fatalf("alice rmdir: %v %s (err: %s)", err, out, e.s.ReadOrError(e.c, "err"))
	}
	if _, err := os.Lstat(host); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the data dir is still there: %v", err)
	}
	trash, _ := filepath.Glob(filepath.Join(e.s.Root, "trash", e.c+"-*"))
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
