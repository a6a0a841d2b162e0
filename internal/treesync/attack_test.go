package treesync

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// opens watches inodes with inotify and counts the opens the kernel
// reports on them (IN_OPEN: any open for I/O, never an O_PATH one).
type opens struct {
	t  *testing.T
	fd int
}

func watchOpens(t *testing.T, paths ...string) *opens {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	must(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	for _, p := range paths {
		if _, err := unix.InotifyAddWatch(fd, p, unix.IN_OPEN|unix.IN_DONT_FOLLOW); err != nil {
			t.Fatalf("watch %s: %v", p, err)
		}
	}
	return &opens{t: t, fd: fd}
}

// take returns the opens reported since the last call.
func (o *opens) take() int {
	o.t.Helper()
	n := 0
	buf := make([]byte, 64*1024)
	for {
		got, err := unix.Read(o.fd, buf)
		if errors.Is(err, unix.EAGAIN) {
			return n
		}
		must(o.t, err)
		for off := 0; off < got; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
				o.t.Fatal("inotify queue overflowed: opens were lost")
			}
			if ev.Mask&unix.IN_OPEN != 0 {
				n++
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
	}
}

// devicesOpenable fails the test where a device node could not be opened
// at all (a nodev mount): there, "never opened" would prove nothing.
func devicesOpenable(t *testing.T, dir string) {
	t.Helper()
	var fs unix.Statfs_t
	must(t, unix.Statfs(dir, &fs))
	if fs.Flags&unix.ST_NODEV != 0 {
		t.Fatalf("%s is on a nodev mount, where no device can be opened: set TMPDIR to a directory on a mount without nodev", dir)
	}
}

// TestDeep: a chain of directories whose path is far longer than PATH_MAX
// is copied, linked to a previous copy, has its hard links kept and its
// removed parts removed: nothing is reached by a path string.
func TestDeep(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	must(t, os.Mkdir(src, 0o755))
	const levels = 40
	name := strings.Repeat("d", 200)
	// Build it with fds: a path this long cannot be named.
	fd, err := unix.Open(src, dirFlags, 0)
	must(t, err)
	var fds []int
	for i := 0; i < levels; i++ {
		must(t, unix.Mkdirat(fd, name, 0o755))
		fds = append(fds, fd)
		fd, err = openDir(fd, name)
		must(t, err)
	}
	writeAt(t, fd, "deep", "bottom")
	must(t, unix.Linkat(fd, "deep", fd, "deep2", 0))
	must(t, unix.Symlinkat("/etc/passwd", fd, "link"))
	for _, f := range append(fds, fd) {
		unix.Close(f)
	}
	long := src + strings.Repeat("/"+name, levels) + "/deep"
	if len(long) <= unix.PathMax {
		t.Fatalf("path of %d bytes is not beyond PATH_MAX", len(long))
	}
	if _, err := os.Lstat(long); !errors.Is(err, unix.ENAMETOOLONG) {
		t.Fatalf("lstat of the %d-byte path: %v, want ENAMETOOLONG", len(long), err)
	}
	settle()

	dst := filepath.Join(dir, "copy")
	tr := New(src, dst, Options{})
	st := pass(t, tr)
	if st.Dirs != levels+1 || st.Copied != 1 || st.Linked != 1 || st.Symlinks != 1 {
		t.Fatalf("stats: %+v", st)
	}
	got := atDepth(t, dst, name, levels, func(fd int) string {
		var a, b unix.Stat_t
		must(t, unix.Fstatat(fd, "deep", &a, unix.AT_SYMLINK_NOFOLLOW))
		must(t, unix.Fstatat(fd, "deep2", &b, unix.AT_SYMLINK_NOFOLLOW))
		if a.Ino != b.Ino {
			t.Fatal("the hard link at the bottom is two files in the copy")
		}
		target, err := readlinkat(fd, "link")
		must(t, err)
		if target != "/etc/passwd" {
			t.Fatalf("symlink target %q", target)
		}
		return readAt(t, fd, "deep")
	})
	if got != "bottom" {
		t.Fatalf("deepest file: %q", got)
	}
	m := tr.Manifest()
	if len(m) != 2 {
		t.Fatalf("manifest: %d entries", len(m))
	}

	// A second copy links the bottom file to the first.
	dst2 := filepath.Join(dir, "copy2")
	st = pass(t, New(src, dst2, Options{PrevRoot: dst, Prev: m}))
	if st.Linked != 2 || st.Copied != 0 {
		t.Fatalf("second copy: %+v", st)
	}
	ino := func(root string) uint64 {
		return atDepth(t, root, name, levels, func(fd int) uint64 {
			var s unix.Stat_t
			must(t, unix.Fstatat(fd, "deep", &s, unix.AT_SYMLINK_NOFOLLOW))
			return s.Ino
		})
	}
	if ino(dst) != ino(dst2) {
		t.Fatal("the unchanged bottom file was not linked to the previous copy")
	}

	// Cut the chain half-way: the delta pass removes the rest.
	atDepth(t, src, name, levels/2, func(fd int) int {
		must(t, removeAllAt(fd, name))
		return 0
	})
	st = pass(t, tr)
	if st.Removed != 1 {
		t.Fatalf("delta after the cut: %+v", st)
	}
	atDepth(t, dst, name, levels/2, func(fd int) int {
		if names, err := readNames(fd); err != nil || len(names) != 0 {
			t.Fatalf("left in the copy after the cut: %v %v", names, err)
		}
		return 0
	})
}

// atDepth runs f on the directory levels deep in root (each level named
// name), reached with one openat per level.
func atDepth[T any](t *testing.T, root, name string, levels int, f func(fd int) T) T {
	t.Helper()
	fd, err := unix.Open(root, dirFlags, 0)
	must(t, err)
	for i := 0; i < levels; i++ {
		next, err := openDir(fd, name)
		unix.Close(fd)
		if err != nil {
			t.Fatalf("level %d: %v", i+1, err)
		}
		fd = next
	}
	defer unix.Close(fd)
	return f(fd)
}

func writeAt(t *testing.T, dirfd int, name, s string) {
	t.Helper()
	fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
	must(t, err)
	_, err = unix.Write(fd, []byte(s))
	must(t, err)
	must(t, unix.Close(fd))
}

func readAt(t *testing.T, dirfd int, name string) string {
	t.Helper()
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	must(t, err)
	defer unix.Close(fd)
	buf := make([]byte, 256)
	n, err := unix.Read(fd, buf)
	must(t, err)
	return string(buf[:n])
}

// TestSwapRace: while the copy runs pass after pass, a goroutine swaps a
// fifo (or a device node) with a regular file (or a directory) at the
// same name with renameat2(RENAME_EXCHANGE), as a running bot can. The
// copy must never open the node (inotify reports every open of it; for a
// fifo, a writer probe after each swap would also find a reader and
// unblock one that blocked) and never fail; and the swap must have landed
// in the window between the walker's lstat and its open often enough to
// prove the point.
func TestSwapRace(t *testing.T) {
	for _, c := range []struct{ kind, node string }{{"file", "fifo"}, {"dir", "fifo"}, {"file", "device"}} {
		t.Run(c.kind+"-"+c.node, func(t *testing.T) { swapRace(t, c.kind, c.node) })
	}
}

func swapRace(t *testing.T, kind, node string) {
	const (
		wantHits  = 50     // windows hit before the test is satisfied
		maxPasses = 200000 // a failure, not a skip, if the hits never came
	)
	dir := t.TempDir()
	src, aside := filepath.Join(dir, "src"), filepath.Join(dir, "aside")
	must(t, os.Mkdir(src, 0o755))
	must(t, os.Mkdir(aside, 0o755))
	victim, planted := filepath.Join(src, "x"), filepath.Join(aside, "x")
	write(t, filepath.Join(src, "other"), "other")
	if kind == "file" {
		write(t, victim, "regular")
	} else {
		write(t, filepath.Join(victim, "inner"), "inner")
	}
	if node == "fifo" {
		must(t, unix.Mkfifo(planted, 0o666))
	} else {
		// /dev/null's numbers: harmless if the test fails by opening it.
		devicesOpenable(t, dir)
		must(t, unix.Mknod(planted, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	}
	ops := watchOpens(t, planted)

	var swaps, probed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		plantedAt := [2]string{planted, victim}
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := unix.Renameat2(unix.AT_FDCWD, victim, unix.AT_FDCWD, planted, unix.RENAME_EXCHANGE); err != nil {
				t.Errorf("exchange: %v", err)
				return
			}
			swaps.Add(1)
			if node != "fifo" {
				continue
			}
			// A writer open succeeds only while someone has the fifo
			// open for reading: then the copy opened it (and is freed
			// if it blocked there).
			if fd, err := unix.Open(plantedAt[i%2], unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err == nil {
				probed.Add(1)
				unix.Close(fd)
			}
		}
	}()

	tr := New(src, filepath.Join(dir, "copy"), Options{Special: true})
	var hits, sawNode, passes, opened int
	for ; hits < wantHits && passes < maxPasses && opened == 0; passes++ {
		st, err := tr.Pass()
		if err != nil {
			close(stop)
			wg.Wait()
			t.Fatalf("pass %d failed under the race: %v", passes, err)
		}
		hits += st.Raced
		sawNode += st.Special
		opened += ops.take()
	}
	close(stop)
	wg.Wait()
	opened += ops.take()
	t.Logf("%s/%s: %d passes, %d swaps, %d windows hit (lstat saw the %s, the open found the %s), %s seen and recreated %d times",
		kind, node, passes, swaps.Load(), hits, kind, node, node, sawNode)
	if opened != 0 || probed.Load() != 0 {
		t.Fatalf("the copy opened the %s: %d opens seen by inotify, %d by the writer probe", node, opened, probed.Load())
	}
	if hits == 0 {
		t.Fatalf("the swap never landed between lstat and open in %d passes (%d swaps): the race was not tested", passes, swaps.Load())
	}
	if sawNode == 0 {
		t.Fatalf("the %s was never seen at the name in %d passes", node, passes)
	}
	// The detector works: an open of the node is seen.
	at := planted
	var st unix.Stat_t
	if must(t, unix.Lstat(at, &st)); st.Mode&unix.S_IFMT == unix.S_IFREG || st.Mode&unix.S_IFMT == unix.S_IFDIR {
		at = victim // after an odd number of swaps
	}
	fd, err := unix.Open(at, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	must(t, err)
	unix.Close(fd)
	if n := ops.take(); n != 1 {
		t.Fatalf("inotify saw %d opens of the %s, want 1: the detector is blind", n, node)
	}
}

// TestDeviceNodes: a device node (the numbers of /dev/null), a fifo and a
// socket in the source are recreated in the copy with their type, numbers,
// owner and mode, or skipped without Special, and never opened.
func TestDeviceNodes(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	must(t, os.Mkdir(src, 0o755))
	devicesOpenable(t, dir)
	null, fifo, sock := filepath.Join(src, "null"), filepath.Join(src, "fifo"), filepath.Join(src, "sock")
	must(t, unix.Mknod(null, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(t, unix.Chmod(null, 0o666))
	must(t, unix.Lchown(null, 12, 34))
	must(t, unix.Mkfifo(fifo, 0o640))
	must(t, unix.Mknod(sock, unix.S_IFSOCK|0o600, 0))
	ops := watchOpens(t, null, fifo)

	dst := filepath.Join(dir, "copy")
	tr := New(src, dst, Options{Special: true})
	if st := pass(t, tr); st.Special != 3 {
		t.Fatalf("stats: %+v", st)
	}
	pass(t, tr) // and a delta pass
	var st unix.Stat_t
	must(t, unix.Lstat(filepath.Join(dst, "null"), &st))
	if st.Mode != unix.S_IFCHR|0o666 || st.Rdev != unix.Mkdev(1, 3) || st.Uid != 12 || st.Gid != 34 {
		t.Fatalf("copy of the device: mode %o rdev %d:%d owner %d:%d", st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev), st.Uid, st.Gid)
	}
	must(t, unix.Lstat(filepath.Join(dst, "fifo"), &st))
	if st.Mode != unix.S_IFIFO|0o640 {
		t.Fatalf("copy of the fifo: mode %o", st.Mode)
	}
	must(t, unix.Lstat(filepath.Join(dst, "sock"), &st))
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		t.Fatalf("copy of the socket: mode %o", st.Mode)
	}

	plain := filepath.Join(dir, "plain")
	if st := pass(t, New(src, plain, Options{})); st.Skipped != 3 || st.Special != 0 {
		t.Fatalf("without Special: %+v", st)
	}
	if names, _ := os.ReadDir(plain); len(names) != 0 {
		t.Fatalf("without Special the copy has %v", names)
	}
	if n := ops.take(); n != 0 {
		t.Fatalf("the copy opened a device node or fifo %d times", n)
	}
	// The detector works: an open of the node is seen.
	f, err := os.OpenFile(null, os.O_WRONLY, 0)
	must(t, err)
	f.Close()
	if n := ops.take(); n != 1 {
		t.Fatalf("inotify saw %d opens of the node, want 1: the detector is blind", n)
	}
}
