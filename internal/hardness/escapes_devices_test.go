package hardness

import (
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

// Attacks of TestEscapes (escapes_harness_test.go): device nodes and fifos the bot makes, opened through the mount.

func escDevices(t *testing.T, e *escEnv) {
	e.sh(t, e.a, fmt.Sprintf("mknod /data/cdev c 1 5 && mknod /data/bdev b %d %d && chmod 666 /data/cdev /data/bdev", e.loopMaj, e.loopMin))
	opts := escMountOptions(t, e.s.Mnt)
	for _, o := range []string{"nosuid", "nodev"} {
		if !opts[o] {
			t.Errorf("the mount lacks %s: %v", o, opts)
		}
	}
	fi, err := os.Lstat(e.data(e.a, "bdev"))
	if err != nil || fi.Mode()&fs.ModeDevice == 0 {
		t.Fatalf("the bot's device through the mount: %v %v", fi, err)
	}
	for _, name := range []string{"cdev", "bdev"} {
		for _, flags := range []int{unix.O_RDONLY, unix.O_RDWR, unix.O_WRONLY | unix.O_TRUNC} {
			begin := time.Now()
			fd, err := unix.Open(e.data(e.a, name), flags|unix.O_NONBLOCK, 0)
			if err == nil {
				unix.Close(fd)
			}
			if err != unix.EACCES || time.Since(begin) > 2*time.Second {
				t.Errorf("root opens the bot's %s (flags %#x): %v after %s, want EACCES at once", name, flags, err, time.Since(begin))
			}
		}
		e.expect(t, escAlice, escErr(syscall.EACCES), "read", e.data(e.a, name))
		e.expect(t, escAlice, escErr(syscall.EACCES), "rdwr", e.data(e.a, name), "PWN")
	}
	if err := os.Truncate(e.data(e.a, "bdev"), 0); fileOpErrno(err) != syscall.EINVAL {
		t.Errorf("truncate of the device through the mount: %v, want EINVAL", err)
	}
	// Root may make a device node through the mount (tar x of a root
	// file system), as on ext4; it opens nothing: every mount of bot data
	// is nodev.
	if err := unix.Mknod(e.data(e.a, "mydev"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 5))); err != nil {
		t.Errorf("root mknod of a device through the mount: %v, want success", err)
	} else if fd, err := unix.Open(e.data(e.a, "mydev"), unix.O_RDWR, 0); err != unix.EACCES {
		if err == nil {
			unix.Close(fd)
		}
		t.Errorf("open of a device node made through the mount: %v, want EACCES (nodev)", err)
	}
}

func escDeviceHostPath(t *testing.T, e *escEnv) {
	e.sh(t, e.a, fmt.Sprintf("[ -b /data/bdev ] || mknod /data/bdev b %d %d; chmod 666 /data/bdev; ln -s %s/bdev /data/bdev-host",
		e.loopMaj, e.loopMin, e.s.HostData(e.a)))
	p := e.data(e.a, "bdev-host")
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "read", p)
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EACCES)), "rdwr", p, "PWN-THROUGH-HOST-PATH")
}

func escFifo(t *testing.T, e *escEnv) {
	e.sh(t, e.a, "mkfifo /data/fifo && chmod 666 /data/fifo")
	// The bot waits to hand data to whoever opens its fifo.
	stop := e.race(t, e.a, "fifo", "", "echo BOTDATA > /data/fifo", "")
	p := e.data(e.a, "fifo")
	fi, err := os.Lstat(p)
	if err != nil || fi.Mode()&fs.ModeNamedPipe == 0 {
		t.Fatalf("the bot's fifo through the mount: %v %v", fi, err)
	}
	// Through FUSE, a reader through the mount is not connected to the
	// bot's fifo (the kernel makes a pipe of the mount's own). Through a
	// bind, the fifo is the bot's own, as in a dir shared on a local
	// disk: a reader gets what the bot writes; memohfs is not involved.
	if !e.binds {
		e.expect(t, escAlice, "ok ", "read", p)
	}
	e.expect(t, escAlice, escErr(syscall.ENXIO), "wronb", p, "x")
	begin := time.Now()
	out, err := e.run(t, escAlice, 10*time.Second, "timeout", "-s", "KILL", "2", "cat", p)
	t.Logf("blocking cat through the mount: %v after %s: %q", err, time.Since(begin).Round(time.Millisecond), out)
	if strings.Contains(out, "BOTDATA") != e.binds {
		t.Errorf("a reader through data/ got the bot's fifo data: %v, want %v (binds %v)", strings.Contains(out, "BOTDATA"), e.binds, e.binds)
	}
	if _, err := os.ReadFile(e.s.Path(e.a, "status")); err != nil {
		t.Errorf("memohfs after the fifo opens: %v", err)
	}
	must(t, os.WriteFile(filepath.Join(e.s.HostData(e.a), ".stop-fifo"), nil, 0o644))
	e.sh(t, e.a, "timeout 2 cat /data/fifo >/dev/null; true")
	t.Logf("bot: %s", stop())
}
