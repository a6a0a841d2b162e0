package hardness

import (
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/memohfs/memohfs/internal/testenv"
	"github.com/memohfs/memohfs/internal/teststack"
)

func TestMain(m *testing.M) {
	testenv.Main(m, testenv.Needs{Containerd: true, Postgres: true})
}

// soak says whether to run the long variants (make soak).
func soak() bool { return os.Getenv("MEMOHFS_SOAK") != "" }

// count is n, or soakN under make soak.
func count(n, soakN int) int {
	if soak() {
		return soakN
	}
	return n
}

// stack is one test's memohfs (teststack), with the methods of this
// package's tests.
type stack struct{ *teststack.Stack }

// newStack starts a stack with this package's defaults (a stop grace of
// 3s, a connect timeout of 2s) where o leaves them zero.
func newStack(t *testing.T, o teststack.Options) *stack {
	t.Helper()
	if o.Control.StopGrace == 0 {
		o.Control.StopGrace = 3 * time.Second
	}
	if o.Store.ConnectTimeout == 0 {
		o.Store.ConnectTimeout = 2 * time.Second
	}
	return &stack{teststack.New(t, o)}
}

// fileOpErrno digs the errno out of an error from a file operation (0
// if there is none, or it is wrapped in something else).
func fileOpErrno(err error) syscall.Errno {
	var e syscall.Errno
	for err != nil {
		if x, ok := err.(syscall.Errno); ok {
			return x
		}
		switch x := err.(type) {
		case *os.PathError:
			err = x.Err
		case *os.LinkError:
			err = x.Err
		case *os.SyscallError:
			err = x.Err
		default:
			return e
		}
	}
	return e
}

func itoa(n int) string { return strconv.Itoa(n) }

// must is teststack.Must.
var must = teststack.Must

// waitFor is testenv.Eventually.
var waitFor = testenv.Eventually
