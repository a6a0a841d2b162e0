package control

import (
	"context"
	"os"
	"sync"

	"github.com/memohfs/memohfs/internal/pipeio"
)

// stderrKeep is how much unread stderr a connection keeps.
const stderrKeep = 256 << 10

// ring keeps the newest bytes of a stream nobody may be reading: the
// writer never waits (a process is never blocked on its stderr), the
// oldest unread bytes give way, and a reader is told how many did.
type ring struct {
	mu      sync.Mutex
	buf     []byte // unread, oldest first
	keep    int
	dropped int64
	eof     bool
	more    chan struct{} // closed and replaced when bytes or eof arrive
}

func newRing(keep int) *ring { return &ring{keep: keep, more: make(chan struct{})} }

// pump copies f into the ring until end of file (or ctx).
func (r *ring) pump(ctx context.Context, f *os.File) {
	p := make([]byte, 64<<10)
	for {
		n, err := pipeio.Read(ctx, f, p)
		r.mu.Lock()
		if n > 0 {
			r.buf = append(r.buf, p[:n]...)
			if over := len(r.buf) - r.keep; over > 0 {
				r.buf = append(r.buf[:0], r.buf[over:]...)
				r.dropped += int64(over)
			}
		}
		done := n == 0 || err != nil
		if done {
			r.eof = true
		}
		close(r.more)
		r.more = make(chan struct{})
		r.mu.Unlock()
		if done {
			return
		}
	}
}

// read takes unread bytes, waiting for some; 0, nil at end of file.
func (r *ring) read(ctx context.Context, p []byte) (int, error) {
	for {
		r.mu.Lock()
		if len(r.buf) > 0 {
			n := copy(p, r.buf)
			r.buf = r.buf[n:]
			if len(r.buf) == 0 {
				r.buf = nil
			}
			r.mu.Unlock()
			return n, nil
		}
		if r.eof {
			r.mu.Unlock()
			return 0, nil
		}
		more := r.more
		r.mu.Unlock()
		select {
		case <-more:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

func (r *ring) droppedBytes() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dropped
}
