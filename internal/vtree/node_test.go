package vtree

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/memohfs/memohfs/control"
)

// TestErrno: the errno each kind of error gives on both faces, as
// docs/semantics.md's errno table says.
func TestErrno(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want syscall.Errno
	}{
		{nil, 0},
		{syscall.EROFS, syscall.EROFS},
		{&control.Error{Kind: control.KindInvalid, Msg: "x"}, syscall.EINVAL},
		{&control.Error{Kind: control.KindNotFound, Msg: "x"}, syscall.ENOENT},
		{&control.Error{Kind: control.KindExists, Msg: "x"}, syscall.EEXIST},
		{&control.Error{Kind: control.KindBusy, Msg: "x"}, syscall.EBUSY},
		{&control.Error{Kind: control.KindPermission, Msg: "x"}, syscall.EACCES},
		{&control.Error{Kind: control.KindAgain, Msg: "x"}, syscall.EAGAIN},
		{&control.Error{Kind: control.KindBrokenPipe, Msg: "x"}, syscall.EPIPE},
		{&control.Error{Kind: control.KindUnavailable, Msg: "x"}, syscall.EIO},
		{fmt.Errorf("waiting: %w", context.Canceled), syscall.EINTR},
		{fmt.Errorf("lookup: %w", errdefs.ErrNotFound), syscall.ENOENT},
		{errors.New("something else broke"), syscall.EIO},
	} {
		if got := Errno(tc.err); got != tc.want {
			t.Errorf("Errno(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestReadAt(t *testing.T) {
	c := []byte("hello\n")
	for _, tc := range []struct {
		off  int64
		size int
		want string
	}{
		{0, 64, "hello\n"}, {2, 2, "ll"}, {5, 64, "\n"}, {6, 64, ""}, {100, 64, ""}, {-1, 64, ""},
	} {
		p := make([]byte, tc.size)
		if got := string(p[:ReadAt(c, p, tc.off)]); got != tc.want {
			t.Errorf("ReadAt(off %d, %d bytes) = %q, want %q", tc.off, tc.size, got, tc.want)
		}
	}
}

// TestStableIno: the same identity gives the same number, parts are not
// run together ("ab","c" is not "a","bc"), and every number is above any
// host inode number a face mixes in (2^62 and up, below 2^63).
func TestStableIno(t *testing.T) {
	// The number must not change between versions (a client may hold
	// it across a restart of memohfs): FNV-1a 64 of "b1\x00status\x00",
	// the top bits set to 01, computed apart from this code.
	if got := StableIno("b1", "status"); got != 0x41b07ba4adf9ee1a {
		t.Fatalf("StableIno(b1, status) = %#x, want 0x41b07ba4adf9ee1a", got)
	}
	if StableIno("ab", "c") == StableIno("a", "bc") {
		t.Fatal("parts run together")
	}
	for i := range 1000 {
		n := StableIno("bot", fmt.Sprint(i))
		if n < 1<<62 || n >= 1<<63 {
			t.Fatalf("StableIno = %#x, out of [2^62, 2^63)", n)
		}
	}
}

func TestTooLong(t *testing.T) {
	if err := TooLong(strings.Repeat("a", NameMax)); err != nil {
		t.Fatal(err)
	}
	if err := TooLong(strings.Repeat("a", NameMax+1)); err != syscall.ENAMETOOLONG {
		t.Fatalf("%d bytes: %v, want ENAMETOOLONG", NameMax+1, err)
	}
}

func TestCaller(t *testing.T) {
	if _, ok := CallerOf(context.Background()); ok {
		t.Fatal("a caller without WithCaller")
	}
	c, ok := CallerOf(WithCaller(context.Background(), Caller{Uid: 1000, Gid: 100, Pid: 42}))
	if !ok || c != (Caller{Uid: 1000, Gid: 100, Pid: 42}) {
		t.Fatalf("CallerOf = %+v %v", c, ok)
	}
}
