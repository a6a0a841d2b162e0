package p9test

import (
	"context"
	"errors"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
)

// bound is how long anything the tests wait for may take.
const bound = 10 * time.Second

// tailFS is a root directory holding one file, "tail", whose reads block
// until their context is done, as a tail -f would block for more data.
type tailFS struct {
	// blocked receives a value each time a read starts waiting.
	blocked chan struct{}
	// cancelled counts the reads that returned because their context was
	// done.
	cancelled atomic.Int32
	// open counts the Files made (Attach, Walk) and not yet Closed.
	open atomic.Int32
}

func newTailFS() *tailFS {
	return &tailFS{blocked: make(chan struct{}, 16)}
}

// Attach implements p9.Attacher.
func (fs *tailFS) Attach() (p9.File, error) {
	fs.open.Add(1)
	return &dir{fs: fs}, nil
}

// dir is the root.
type dir struct {
	enosys
	fs *tailFS
}

func (d *dir) GetAttr(p9.AttrMask) (p9.QID, p9.AttrMask, p9.Attr, error) {
	return p9.QID{Type: p9.TypeDir, Path: 1}, p9.AttrMask{Mode: true}, p9.Attr{Mode: p9.ModeDirectory | 0o755, NLink: 2}, nil
}

func (d *dir) Walk(names []string) ([]p9.QID, p9.File, error) {
	switch {
	case len(names) == 0:
		d.fs.open.Add(1)
		return nil, &dir{fs: d.fs}, nil
	case len(names) == 1 && names[0] == "tail":
		d.fs.open.Add(1)
		return []p9.QID{{Type: p9.TypeRegular, Path: 2}}, &tail{fs: d.fs}, nil
	}
	return nil, nil, linux.ENOENT
}

func (d *dir) Open(p9.OpenFlags) (p9.QID, uint32, error) {
	return p9.QID{Type: p9.TypeDir, Path: 1}, 0, nil
}

func (d *dir) Close() error {
	d.fs.open.Add(-1)
	return nil
}

// tail is the file whose reads block.
type tail struct {
	enosys
	fs *tailFS
}

// The server must call ReadAtContext, never ReadAt.
var _ p9.ReaderAtContext = (*tail)(nil)

func (f *tail) GetAttr(p9.AttrMask) (p9.QID, p9.AttrMask, p9.Attr, error) {
	return p9.QID{Type: p9.TypeRegular, Path: 2}, p9.AttrMask{Mode: true}, p9.Attr{Mode: p9.ModeRegular | 0o444, NLink: 1}, nil
}

func (f *tail) Walk(names []string) ([]p9.QID, p9.File, error) {
	if len(names) != 0 {
		return nil, nil, linux.ENOTDIR
	}
	f.fs.open.Add(1)
	return nil, &tail{fs: f.fs}, nil
}

func (f *tail) Open(p9.OpenFlags) (p9.QID, uint32, error) {
	return p9.QID{Type: p9.TypeRegular, Path: 2}, 0, nil
}

func (f *tail) ReadAtContext(ctx context.Context, p []byte, offset int64) (int, error) {
	f.fs.blocked <- struct{}{}
	<-ctx.Done()
	f.fs.cancelled.Add(1)
	return 0, linux.EINTR
}

func (f *tail) Close() error {
	f.fs.open.Add(-1)
	return nil
}

// conn is a client connected to a server of fs.
type conn struct {
	client *p9.Client
	// handled is closed when the server's Handle has returned.
	handled chan struct{}
}

// serve serves fs on one end of a pipe and connects a client to the other.
// The test's cleanup closes the client and waits for Handle to return.
func serve(t *testing.T, fs *tailFS) *conn {
	t.Helper()
	sconn, cconn := net.Pipe()
	c := &conn{handled: make(chan struct{})}
	go func() {
		defer close(c.handled)
		p9.NewServer(fs).Handle(sconn, sconn)
	}()
	client, err := p9.NewClient(cconn)
	if err != nil {
		cconn.Close()
		<-c.handled
		t.Fatalf("NewClient: %v", err)
	}
	c.client = client
	t.Cleanup(func() {
		client.Close()
		c.waitHandled(t)
	})
	return c
}

// waitHandled fails t unless Handle returns within bound.
func (c *conn) waitHandled(t *testing.T) {
	t.Helper()
	select {
	case <-c.handled:
	case <-time.After(bound):
		t.Fatalf("server.Handle did not return within %v of the client's close", bound)
	}
}

// openTail attaches, walks to "tail" and opens it for reading.
func openTail(t *testing.T, c *conn) (root p9.File, f p9.ReaderAtContext) {
	t.Helper()
	root, err := c.client.Attach("")
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	_, file, err := root.Walk([]string{"tail"})
	if err != nil {
		t.Fatalf("Walk tail: %v", err)
	}
	if _, _, err := file.Open(p9.ReadOnly); err != nil {
		t.Fatalf("Open tail: %v", err)
	}
	f, ok := file.(p9.ReaderAtContext)
	if !ok {
		t.Fatalf("the client's File %T does not implement p9.ReaderAtContext", file)
	}
	return root, f
}

// waitBlocked waits until a read on the server is blocked.
func waitBlocked(t *testing.T, fs *tailFS) {
	t.Helper()
	select {
	case <-fs.blocked:
	case <-time.After(bound):
		t.Fatalf("no read blocked on the server within %v", bound)
	}
}

// TestFlushCancelsRead: a ReadAtContext whose ctx is cancelled while the
// server's read blocks sends a Tflush, which cancels the server's read; the
// call returns ctx's error and the connection goes on working, its tags
// included (three rounds).
func TestFlushCancelsRead(t *testing.T) {
	fs := newTailFS()
	c := serve(t, fs)
	root, f := openTail(t, c)

	for i := int32(1); i <= 3; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, err := f.ReadAtContext(ctx, make([]byte, 64), 0)
			errc <- err
		}()
		waitBlocked(t, fs)
		cancel()
		select {
		case err := <-errc:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("round %d: ReadAtContext after cancel: got %v, want %v", i, err, context.Canceled)
			}
		case <-time.After(bound):
			t.Fatalf("round %d: ReadAtContext did not return within %v of its ctx's cancel (the Tflush waits for the blocked read)", i, bound)
		}
		if got := fs.cancelled.Load(); got != i {
			t.Fatalf("round %d: server reads that saw their ctx cancelled: got %d, want %d", i, got, i)
		}

		// The connection still works.
		_, file, err := root.Walk([]string{"tail"})
		if err != nil {
			t.Fatalf("round %d: Walk after the flush: %v", i, err)
		}
		_, _, attr, err := file.GetAttr(p9.AttrMaskAll)
		if err != nil {
			t.Fatalf("round %d: GetAttr after the flush: %v", i, err)
		}
		if !attr.Mode.IsRegular() {
			t.Fatalf("round %d: GetAttr after the flush: mode %v, want a regular file", i, attr.Mode)
		}
		if err := file.Close(); err != nil {
			t.Fatalf("round %d: Close: %v", i, err)
		}
	}
}

// TestCloseCancelsRead: when the client's connection closes while a read
// blocks on the server, the read's ctx is cancelled, server.Handle returns,
// every File is closed and no goroutine is left behind.
func TestCloseCancelsRead(t *testing.T) {
	baseline := runtime.NumGoroutine()

	fs := newTailFS()
	c := serve(t, fs)
	_, f := openTail(t, c)

	errc := make(chan error, 1)
	go func() {
		// A plain ReadAt: the server gives its File a ctx regardless.
		_, err := f.(p9.File).ReadAt(make([]byte, 64), 0)
		errc <- err
	}()
	waitBlocked(t, fs)

	if err := c.client.Close(); err != nil {
		t.Fatalf("closing the client: %v", err)
	}
	c.waitHandled(t)

	select {
	case err := <-errc:
		if err == nil {
			t.Errorf("ReadAt on a closed connection returned no error")
		}
	case <-time.After(bound):
		t.Fatalf("the client's ReadAt did not return within %v of its connection's close", bound)
	}
	if got := fs.cancelled.Load(); got != 1 {
		t.Errorf("server reads that saw their ctx cancelled: got %d, want 1", got)
	}
	if got := fs.open.Load(); got != 0 {
		t.Errorf("Files left open after Handle returned: %d", got)
	}

	deadline := time.Now().Add(bound)
	for {
		n := runtime.NumGoroutine()
		if n <= baseline {
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d, %d before the connection; stacks:\n%s", n, baseline, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// enosys implements every p9.File method with ENOSYS; dir and tail override
// the ones they need.
type enosys struct{}

func (enosys) Walk([]string) ([]p9.QID, p9.File, error) { return nil, nil, linux.ENOSYS }
func (enosys) WalkGetAttr([]string) ([]p9.QID, p9.File, p9.AttrMask, p9.Attr, error) {
	return nil, nil, p9.AttrMask{}, p9.Attr{}, linux.ENOSYS
}
func (enosys) StatFS() (p9.FSStat, error) { return p9.FSStat{}, linux.ENOSYS }
func (enosys) GetAttr(p9.AttrMask) (p9.QID, p9.AttrMask, p9.Attr, error) {
	return p9.QID{}, p9.AttrMask{}, p9.Attr{}, linux.ENOSYS
}
func (enosys) SetAttr(p9.SetAttrMask, p9.SetAttr) error     { return linux.ENOSYS }
func (enosys) Close() error                                 { return nil }
func (enosys) Open(p9.OpenFlags) (p9.QID, uint32, error)    { return p9.QID{}, 0, linux.ENOSYS }
func (enosys) ReadAt([]byte, int64) (int, error)            { return 0, linux.ENOSYS }
func (enosys) WriteAt([]byte, int64) (int, error)           { return 0, linux.ENOSYS }
func (enosys) SetXattr(string, []byte, p9.XattrFlags) error { return linux.ENOSYS }
func (enosys) GetXattr(string) ([]byte, error)              { return nil, linux.ENOSYS }
func (enosys) ListXattrs() ([]string, error)                { return nil, linux.ENOSYS }
func (enosys) RemoveXattr(string) error                     { return linux.ENOSYS }
func (enosys) FSync() error                                 { return linux.ENOSYS }
func (enosys) Link(p9.File, string) error                   { return linux.ENOSYS }
func (enosys) Rename(p9.File, string) error                 { return linux.ENOSYS }
func (enosys) RenameAt(string, p9.File, string) error       { return linux.ENOSYS }
func (enosys) UnlinkAt(string, uint32) error                { return linux.ENOSYS }
func (enosys) Readdir(uint64, uint32) (p9.Dirents, error)   { return nil, linux.ENOSYS }
func (enosys) Readlink() (string, error)                    { return "", linux.ENOSYS }
func (enosys) Renamed(p9.File, string)                      {}
func (enosys) Lock(int, p9.LockType, p9.LockFlags, uint64, uint64, string) (p9.LockStatus, error) {
	return p9.LockStatusError, linux.ENOSYS
}
func (enosys) Create(string, p9.OpenFlags, p9.FileMode, p9.UID, p9.GID) (p9.File, p9.QID, uint32, error) {
	return nil, p9.QID{}, 0, linux.ENOSYS
}
func (enosys) Mkdir(string, p9.FileMode, p9.UID, p9.GID) (p9.QID, error) {
	return p9.QID{}, linux.ENOSYS
}
func (enosys) Symlink(string, string, p9.UID, p9.GID) (p9.QID, error) {
	return p9.QID{}, linux.ENOSYS
}
func (enosys) Mknod(string, p9.FileMode, uint32, uint32, p9.UID, p9.GID) (p9.QID, error) {
	return p9.QID{}, linux.ENOSYS
}
