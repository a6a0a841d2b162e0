package mount

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/memohfs/memohfs/internal/testenv"
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
	if _, err := Prepare(dir); err == nil {
		t.Fatal("Prepare on a live mount succeeded")
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

// TestPrepareClearsStale: a server killed with -9 leaves a stale mount;
// Prepare clears it.
func TestPrepareClearsStale(t *testing.T) {
	testenv.Get(t)
	dir := t.TempDir()
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
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if st, _ := Check(dir); st != Stale {
		t.Fatalf("after kill -9: %v", st)
	}
	cleared, err := Prepare(dir)
	if err != nil || !cleared {
		t.Fatalf("prepare: %v %v", cleared, err)
	}
	if st, _ := Check(dir); st != NotMounted {
		t.Fatalf("after prepare: %v", st)
	}
	server := mountHello(t, dir)
	go server.Wait()
	if b, err := os.ReadFile(filepath.Join(dir, "hello")); err != nil || string(b) != "hello\n" {
		t.Fatalf("mount again: %q %v", b, err)
	}
	Unmount(dir, time.Second)
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
