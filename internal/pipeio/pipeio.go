// Package pipeio reads and writes non-blocking pipes (FIFOs) from Go's
// poller, with a context that can end a blocked call: what a FUSE read of
// a process's output needs, where the kernel's INTERRUPT must give the
// reader EINTR while the pipe stays usable for the next call.
//
// A call ended by its context returns what it moved so far and the
// context's error; the file's deadline is reset for the next call. At
// most one reader and one writer per file at a time: an interrupt wakes
// every call blocked in that direction.
package pipeio

import (
	"context"
	"errors"
	"io"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// readWaits and writeWaits count calls that found the pipe empty (full)
// and waited: the windows the tests of blocking and interrupts need.
var readWaits, writeWaits atomic.Int64

// Waits says how many reads and writes have had to wait so far.
func Waits() (reads, writes int64) { return readWaits.Load(), writeWaits.Load() }

// past is a deadline that has passed: setting it wakes a blocked call.
var past = time.Unix(1, 0)

// Open opens a FIFO non-blocking, so its calls go through the poller
// (and open itself never waits for the other end).
func Open(path string, flag int) (*os.File, error) {
	return os.OpenFile(path, flag|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
}

// Read reads at least one byte into p, waiting for it, then whatever
// more the pipe holds without waiting, up to len(p). At end of file it
// returns 0, nil.
func Read(ctx context.Context, f *os.File, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if n, ended := more(f, p); ended || n == len(p) {
		return n, nil
	} else if n > 0 {
		return n + gather(f, p[n:], n), nil
	}
	readWaits.Add(1)
	stop := context.AfterFunc(ctx, func() { _ = f.SetReadDeadline(past) })
	defer stop()
	for {
		n, err := f.Read(p)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if cerr := ctx.Err(); cerr != nil {
				return n, cerr
			}
			_ = f.SetReadDeadline(time.Time{})
			continue
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil || n == len(p) {
			return n, err
		}
		return n + gather(f, p[n:], n), nil
	}
}

// gatherAfter and gatherWait shape a stream's reads: a writer that fills
// the pipe in chunks (containerd's shim copies in 4 KiB) would otherwise
// wake each read with one chunk, and every read through FUSE costs a
// round trip. A read that found at least a chunk waits up to gatherWait
// for the next, until p is full; one that found less (an answer, a
// prompt) returns at once.
const (
	gatherAfter = 4096
	gatherWait  = 200 * time.Microsecond
)

// gather reads more into p after got bytes arrived: see gatherAfter.
func gather(f *os.File, p []byte, got int) int {
	total, _ := more(f, p)
	if got+total < gatherAfter {
		return total
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return total
	}
	for total < len(p) {
		ready := false
		_ = rc.Control(func(fd uintptr) {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			ts := unix.NsecToTimespec(int64(gatherWait))
			n, _ := unix.Ppoll(fds, &ts, nil)
			ready = n > 0 && fds[0].Revents&unix.POLLIN != 0
		})
		if !ready {
			break
		}
		n, _ := more(f, p[total:])
		if n == 0 {
			break
		}
		total += n
	}
	return total
}

// more reads what the pipe holds now, without waiting; ended: it met end
// of file (or the file is unusable: the blocking read says why).
func more(f *os.File, p []byte) (total int, ended bool) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, false
	}
	_ = rc.Read(func(fd uintptr) bool {
		for total < len(p) {
			n, err := unix.Read(int(fd), p[total:])
			if n == 0 && err == nil {
				ended = true
			}
			if n <= 0 || err != nil {
				break
			}
			total += n
		}
		return true // never wait
	})
	return total, ended
}

// Write writes all of p, waiting while the pipe is full (the reader's
// pace is the writer's). Ended by ctx, it returns what was written.
func Write(ctx context.Context, f *os.File, p []byte) (int, error) {
	stop := context.AfterFunc(ctx, func() { _ = f.SetWriteDeadline(past) })
	defer stop()
	done := 0
	if rc, err := f.SyscallConn(); err == nil {
		_ = rc.Write(func(fd uintptr) bool {
			n, _ := unix.Write(int(fd), p)
			done = max(n, 0)
			return true
		})
	}
	if done < len(p) {
		writeWaits.Add(1)
	}
	for done < len(p) {
		n, err := f.Write(p[done:])
		done += n
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if cerr := ctx.Err(); cerr != nil {
				return done, cerr
			}
			_ = f.SetWriteDeadline(time.Time{})
			continue
		}
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// Grow asks the kernel for a pipe buffer of size bytes (fewer wake-ups
// per megabyte); a refusal leaves the pipe as it was.
func Grow(f *os.File, size int) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) { _, _ = unix.FcntlInt(fd, unix.F_SETPIPE_SZ, size) })
}
