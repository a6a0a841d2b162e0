package control

import (
	"context"
	"errors"
	"os"
	"syscall"

	"github.com/memohfs/memohfs/internal/pipeio"
	"github.com/memohfs/memohfs/runtime"
)

// The streams of a connection. Reads of data and stderr wait for the
// command to run and then for output, and give end of file once every
// process holding the stream has ended; a write to data waits while the
// process does not read (its pipe is full). A wait ends with ctx
// (KindInterrupted: EINTR), having moved what it moved.

// waitRan waits for exec (or the end of a connection that never ran):
// the proc, or nil.
func (k *Conn) waitRan(ctx context.Context) (*runtime.Proc, error) {
	select {
	case <-k.ran:
	case <-ctx.Done():
		return nil, errorf(KindInterrupted, "cmd/%d: interrupted waiting for exec", k.N)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.proc, nil
}

// ReadData reads the command's stdout.
func (k *Conn) ReadData(ctx context.Context, p []byte) (int, error) {
	proc, err := k.waitRan(ctx)
	if err != nil || proc == nil {
		return 0, err
	}
	n, err := pipeio.Read(ctx, proc.Stdout, p)
	return n, k.ioErr(err, "stdout")
}

// WriteData writes to the command's stdin.
func (k *Conn) WriteData(ctx context.Context, p []byte) (int, error) {
	proc, err := k.waitRan(ctx)
	if err != nil {
		return 0, err
	}
	if proc == nil {
		return 0, errorf(KindBrokenPipe, "cmd/%d: no process to write to (state %s)", k.N, k.stateNow())
	}
	f := proc.StdinFile()
	if f == nil {
		return 0, errorf(KindBrokenPipe, "cmd/%d: stdin is closed", k.N)
	}
	// A process that ended reads no more: a writer blocked on its full
	// pipe is let go then (EPIPE), not left to wait for good.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(proc.Ended(), cancel)
	defer stop()
	n, err := pipeio.Write(wctx, f, p)
	if err != nil && ctx.Err() == nil && wctx.Err() != nil {
		return n, errorf(KindBrokenPipe, "cmd/%d: the command has ended", k.N)
	}
	return n, k.ioErr(err, "stdin")
}

// ReadStderr reads the command's stderr: what was kept of it (see ring)
// and then what comes.
func (k *Conn) ReadStderr(ctx context.Context, p []byte) (int, error) {
	proc, err := k.waitRan(ctx)
	if err != nil || proc == nil {
		return 0, err
	}
	k.mu.Lock()
	r := k.stderr
	k.mu.Unlock()
	n, err := r.read(ctx, p)
	if err != nil {
		return n, errorf(KindInterrupted, "cmd/%d: interrupted reading stderr", k.N)
	}
	return n, nil
}

// Wait waits for the command to end and gives its wait line: pid, real
// time in ms, and `exit CODE`, `signal NAME` (or `failed`, `lost`).
func (k *Conn) Wait(ctx context.Context) (string, error) {
	select {
	case <-k.ended:
	case <-k.ran:
		// ran is closed also by a connection that ends without exec
		k.mu.Lock()
		never := k.proc == nil && k.execID == ""
		k.mu.Unlock()
		if never {
			return "", nil
		}
		select {
		case <-k.ended:
		case <-ctx.Done():
			return "", errorf(KindInterrupted, "cmd/%d: interrupted waiting for the command", k.N)
		}
	case <-ctx.Done():
		return "", errorf(KindInterrupted, "cmd/%d: interrupted waiting for the command", k.N)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.proc == nil || k.exit == nil {
		return "0 0 failed\n", nil
	}
	return waitLine(k.proc.Pid, k.started, *k.exit), nil
}

func (k *Conn) stateNow() ConnState {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.state
}

// ioErr classifies a stream error; a closed stream is end of file.
func (k *Conn) ioErr(err error, what string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return errorf(KindInterrupted, "cmd/%d: interrupted on %s", k.N, what)
	case errors.Is(err, syscall.EPIPE):
		return errorf(KindBrokenPipe, "cmd/%d: the command no longer reads its stdin", k.N)
	case errors.Is(err, os.ErrClosed):
		if what == "stdin" {
			return errorf(KindBrokenPipe, "cmd/%d: stdin is closed", k.N)
		}
		return nil
	}
	return wrap(err, what)
}
