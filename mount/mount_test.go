package mount

import (
	"context"
	"errors"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/memohfs/memohfs/internal/testenv"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv("MOUNT_TEST_SERVE"); dir != "" {
		serveForever(dir)
		return
	}
	testenv.Main(m, testenv.Needs{})
}

// hello is a one-file filesystem.
func hello() fs.InodeEmbedder {
	return &fs.MemRegularFile{Data: []byte("hello\n"), Attr: fuse.Attr{Mode: 0o444}}
}

type root struct{ fs.Inode }

func (r *root) OnAdd(ctx context.Context) {
	r.AddChild("hello", r.NewPersistentInode(ctx, hello(), fs.StableAttr{}), false)
}

func mountHello(t *testing.T, dir string) *fuse.Server {
	t.Helper()
	server, err := fs.Mount(dir, &root{}, &fs.Options{MountOptions: fuse.MountOptions{DirectMount: true, Name: "mounttest"}})
	if err != nil {
		t.Fatal(err)
	}
	return server
}

// serveForever mounts hello at dir and waits to be killed.
func serveForever(dir string) {
	server, err := fs.Mount(dir, &root{}, &fs.Options{MountOptions: fuse.MountOptions{DirectMount: true, Name: "mounttest"}})
	if err != nil {
		os.Exit(2)
	}
	os.Stdout.WriteString("mounted\n")
	server.Wait()
}

func TestCheckAndUnmount(t *testing.T) {
	testenv.Get(t)
	dir := t.TempDir()
	if st, err := Check(dir); err != nil || st != NotMounted {
		t.Fatalf("before mount: %v %v", st, err)
	}
	server := mountHello(t, dir)
	defer server.Unmount()
	if st, _ := Check(dir); st != Mounted {
		t.Fatalf("mounted: %v", st)
	}
	if f, err := NewFUSE(dir, FUSEOptions{Name: "mounttest"}); err == nil {
		f.Close()
		unix.Close(f.Dev)
		t.Fatal("NewFUSE on a live mount succeeded")
	}
	// Busy: a file held open. Retried, then detached lazily.
	f, err := os.Open(filepath.Join(dir, "hello"))
	if err != nil {
		t.Fatal(err)
	}
	mode, err := Unmount(dir, 200*time.Millisecond)
	if err != nil || mode != Lazy {
		t.Fatalf("busy unmount: %v %v", mode, err)
	}
	f.Close()
	if st, _ := Check(dir); st != NotMounted {
		t.Fatalf("after lazy unmount: %v", st)
	}
	if mode, _ := Unmount(dir, 0); mode != NotThere {
		t.Fatalf("unmount of nothing: %v", mode)
	}
	server2 := mountHello(t, dir)
	go server2.Wait()
	if mode, err := Unmount(dir, time.Second); err != nil || mode != Clean {
		t.Fatalf("idle unmount: %v %v", mode, err)
	}
}

// serveHello mounts hello at dir with NewFUSE and Attach and serves it,
// as fsnodes does: it says what Attach found there.
func serveHello(t *testing.T, dir string) (*fuse.Server, Replaced) {
	t.Helper()
	f, err := NewFUSE(dir, FUSEOptions{Name: "mounttest"})
	if err != nil {
		t.Fatal(err)
	}
	server, err := fuse.NewServer(fs.NewNodeFS(&root{}, &fs.Options{}), f.DevPath(), &fuse.MountOptions{Name: "mounttest"})
	if err != nil {
		t.Fatal(err)
	}
	go server.Serve()
	how, err := f.Attach()
	if err != nil {
		t.Fatal(err)
	}
	return server, how
}

// killedServer leaves a stale mount on dir: a child serves hello there,
// a file is bound over its hello (as a dead memohfs leaves its binds),
// and the child is killed with -9.
func killedServer(t *testing.T, dir string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "MOUNT_TEST_SERVE="+dir)
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	if n, _ := out.Read(buf); string(buf[:n]) != "mounted\n" {
		t.Fatalf("child: %q", buf[:n])
	}
	if b, err := os.ReadFile(filepath.Join(dir, "hello")); err != nil || string(b) != "hello\n" {
		t.Fatalf("read through the child's mount: %q %v", b, err)
	}
	src := filepath.Join(t.TempDir(), "bound")
	if err := os.WriteFile(src, []byte("bound\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(src, filepath.Join(dir, "hello"), "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if st, _ := Check(dir); st != Stale {
		t.Fatalf("after kill -9: %v", st)
	}
}

// TestAttachReplacesStale: a server killed with -9 leaves a stale
// mount; Attach puts the new one beneath it and takes it off, and
// with it a mount under it (a dead memohfs's binds). The fallback for a
// kernel without MOVE_MOUNT_BENEATH (clear, then mount) works too.
func TestAttachReplacesStale(t *testing.T) {
	testenv.Get(t)
	for _, c := range []struct {
		name      string
		noBeneath bool
		want      Replaced
	}{{"beneath", false, Beneath}, {"no beneath", true, Cleared}} {
		t.Run(c.name, func(t *testing.T) {
			defer func(old bool) { noBeneath = old }(noBeneath)
			noBeneath = c.noBeneath
			dir := t.TempDir()
			killedServer(t, dir)
			server, how := serveHello(t, dir)
			if how != c.want {
				t.Errorf("Attach over a stale mount: %q, want %q", how, c.want)
			}
			if b, err := os.ReadFile(filepath.Join(dir, "hello")); err != nil || string(b) != "hello\n" {
				t.Fatalf("read through the new mount: %q %v", b, err)
			}
			if ms, err := mountsOn(dir); err != nil || len(ms) != 1 {
				t.Fatalf("mounts on %s after the replacement: %v %v (want the new one only)", dir, ms, err)
			}
			if ms, err := Submounts(dir); err != nil || len(ms) != 1 {
				t.Fatalf("mounts at or under %s after the replacement: %v %v (the dead server's bind must go with it)", dir, ms, err)
			}
			if st, _ := Check(dir); st != Mounted {
				t.Fatalf("after the replacement: %v", st)
			}
			if mode, err := Unmount(dir, time.Second); err != nil || mode != Clean {
				t.Fatalf("unmount: %v %v", mode, err)
			}
			server.Wait()
			if _, how := serveHello(t, dir); how != Fresh {
				t.Errorf("Attach on a bare dir: %q", how)
			}
			Unmount(dir, time.Second)
		})
	}
}

// TestAttachNoGap: while a stale mount is replaced, the mount point
// never shows the directory under it. Probes stat a file that only the
// bare directory has, in a loop, from before Attach to after it;
// each answer is the dead mount's error, the new mount's ENOENT, or (the
// gap) the file. The stale server hangs, so probes are in flight on it
// when Attach aborts it: the round counts the probes answered during
// Attach and fails if none was. The fallback (clear, then mount) is
// run the same way, to show the probes can see a gap.
func TestAttachNoGap(t *testing.T) {
	testenv.Get(t)
	for _, c := range []struct {
		name      string
		noBeneath bool
	}{{"beneath", false}, {"no beneath", true}} {
		t.Run(c.name, func(t *testing.T) {
			defer func(old bool) { noBeneath = old }(noBeneath)
			noBeneath = c.noBeneath
			// Beneath, 3 rounds (each waits 1s for the hung mount to be
			// found stale); cleared first, rounds until one shows the gap.
			rounds := 3
			if c.noBeneath {
				rounds = 20
			}
			var during, bare, dead int
			for round := 0; round < rounds && !(c.noBeneath && bare > 0); round++ {
				d, b, x := gapRound(t)
				during, bare, dead = during+d, bare+b, dead+x
			}
			t.Logf("probes answered during Attach: %d (the dead mount's error: %d, the bare dir: %d)", during, dead, bare)
			if during == 0 || dead == 0 {
				t.Fatalf("no probe was answered by the dead mount during Attach (%d answered): the window was never hit", during)
			}
			if !c.noBeneath && bare > 0 {
				t.Fatalf("%d probes saw the bare mount point while a stale mount was replaced from beneath", bare)
			}
			if c.noBeneath && bare == 0 {
				t.Errorf("clearing first never showed the bare mount point in 20 rounds: the probes cannot see a gap")
			}
		})
	}
}

// gapRound replaces a hung mount with Attach under probes, and counts
// the probes answered during Attach, those that saw the bare dir, and
// those the dead mount answered.
func gapRound(t *testing.T) (during, bare, dead int) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bare"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	h := &hung{release: make(chan struct{})}
	// Its server's replies after the abort fail: not worth a log line.
	quiet := log.New(io.Discard, "", 0)
	hs, err := fs.Mount(dir, h, &fs.Options{MountOptions: fuse.MountOptions{DirectMount: true, Name: "mounttest", Logger: quiet}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { close(h.release); hs.Wait() }()
	var inWindow atomic.Bool
	var mu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	started := make(chan struct{}, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			started <- struct{}{}
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, err := os.Stat(filepath.Join(dir, "bare"))
				mu.Lock()
				if inWindow.Load() {
					during++
				}
				switch {
				case err == nil:
					bare++
				case errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED):
					if inWindow.Load() {
						dead++
					}
				}
				mu.Unlock()
			}
		}()
	}
	for range 4 {
		<-started
	}
	inWindow.Store(true)
	server, _ := serveHello(t, dir)
	inWindow.Store(false)
	close(stop)
	wg.Wait()
	Unmount(dir, time.Second)
	server.Wait()
	return during, bare, dead
}

// hung is a filesystem whose server stops answering: every lookup and
// statfs waits until release is closed.
type hung struct {
	fs.Inode
	release chan struct{}
}

func (h *hung) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	<-h.release
	return nil, syscall.ENOENT
}

func (h *hung) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	<-h.release
	return 0
}

// TestClearStaleHung: a server that hangs (what a kill -9 that wedges the
// daemon on its own mount looks like from outside) is found stale, and
// ClearStale aborts its connection: a process stuck on the mount gets
// ECONNABORTED, and the mount is gone. A live mount is left alone.
func TestClearStaleHung(t *testing.T) {
	testenv.Get(t)
	dir := t.TempDir()
	server := mountHello(t, dir)
	if cleared, err := ClearStale(dir); err != nil || cleared {
		t.Fatalf("ClearStale on a live mount: %v %v", cleared, err)
	}
	server.Unmount()

	h := &hung{release: make(chan struct{})}
	defer close(h.release)
	server, err := fs.Mount(dir, h, &fs.Options{MountOptions: fuse.MountOptions{DirectMount: true, Name: "mounttest"}})
	if err != nil {
		t.Fatal(err)
	}
	stuck := make(chan error, 1)
	go func() {
		_, err := os.Stat(filepath.Join(dir, "x"))
		stuck <- err
	}()
	select {
	case err := <-stuck:
		t.Fatalf("the stat did not hang: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	cleared, err := ClearStale(dir)
	if err != nil || !cleared {
		t.Fatalf("ClearStale on a hung mount: %v %v", cleared, err)
	}
	select {
	case err := <-stuck:
		if !errors.Is(err, syscall.ECONNABORTED) && !errors.Is(err, syscall.ENOTCONN) {
			t.Errorf("the stuck stat ended with %v, want ECONNABORTED", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the stuck stat still hangs after the abort")
	}
	if st, _ := Check(dir); st != NotMounted {
		t.Errorf("after ClearStale: %v", st)
	}
	go server.Wait()
}
