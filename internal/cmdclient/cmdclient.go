// Package cmdclient is `memohfs exec`: Inferno's os(1) for memohfs, a
// client of a bot's cmd/ files and nothing else.
//
//	$ memohfs exec mybot -- sh -c 'echo out; echo err >&2; exit 3'
//	out
//	err
//	$ echo $?
//	3
//
// It clones a connection, writes dir, env and exec to its ctl, copies its
// own stdin to data (then closestdin at end of file), data to its stdout
// and stderr to its stderr, and exits with the command's status: the exit
// code, or 128+N for signal N. SIGINT and SIGTERM are passed on to every
// process of the command (kill INT, kill TERM); a second one kills it.
package cmdclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/memohfs/memohfs/internal/shquote"
	"golang.org/x/sys/unix"
)

// Options say what to run where.
type Options struct {
	Mount string // the memohfs mount (/memoh)
	Bot   string
	Dir   string   // working dir in the bot; the connection's default when empty
	Env   []string // KEY=VALUE
	Args  []string

	Stdin          io.Reader // nil: the command's stdin is closed at once
	Stdout, Stderr io.Writer
	// Signals are passed on to the command (see the package doc).
	Signals <-chan os.Signal
}

// Exit statuses of memohfs exec's own failures, as docker and
// env(1) give them.
const (
	ExitFailed     = 125 // the connection could not be made, or its end is unknown
	ExitCannotRun  = 126 // the command is there but cannot be run
	ExitNotFound   = 127 // no such command (or dir)
	exitSignalBase = 128
)

// Error is a failure of memohfs exec itself, with the exit status it
// gives.
type Error struct {
	Code int
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Run runs the command and returns its exit status. An error is memohfs
// exec's own failure (an *Error with its status).
func Run(ctx context.Context, o Options) (int, error) {
	cmdDir := filepath.Join(o.Mount, o.Bot, "cmd")
	ctl, err := os.OpenFile(filepath.Join(cmdDir, "clone"), os.O_RDWR, 0)
	if err != nil {
		return ExitFailed, &Error{ExitFailed, fmt.Errorf("bot %q: %w", o.Bot, describe(err, filepath.Join(o.Mount, o.Bot, "err")))}
	}
	defer ctl.Close()
	buf := make([]byte, 32)
	n, err := ctl.Read(buf)
	if err != nil {
		return ExitFailed, &Error{ExitFailed, fmt.Errorf("read connection number: %w", err)}
	}
	conn := filepath.Join(cmdDir, strings.TrimSpace(string(buf[:n])))
	say := func(verb string) error {
		if _, err := ctl.Write([]byte(verb + "\n")); err != nil {
			return describe(err, filepath.Join(conn, "status"))
		}
		return nil
	}
	if o.Dir != "" {
		if err := say("dir " + shquote.Quote(o.Dir)); err != nil {
			return ExitFailed, &Error{ExitFailed, err}
		}
	}
	for _, kv := range o.Env {
		if err := say("env " + shquote.Quote(kv)); err != nil {
			return ExitFailed, &Error{ExitFailed, err}
		}
	}
	if err := say("exec " + shquote.Join(o.Args)); err != nil {
		code := ExitFailed
		switch {
		case errors.Is(err, syscall.ENOENT):
			code = ExitNotFound
		case errors.Is(err, syscall.EACCES):
			code = ExitCannotRun
		}
		return code, &Error{code, err}
	}

	open := func(name string, flag int) (*os.File, error) {
		return os.OpenFile(filepath.Join(conn, name), flag, 0)
	}
	out, err := open("data", os.O_RDONLY)
	if err != nil {
		return ExitFailed, &Error{ExitFailed, err}
	}
	defer out.Close()
	errf, err := open("stderr", os.O_RDONLY)
	if err != nil {
		return ExitFailed, &Error{ExitFailed, err}
	}
	defer errf.Close()
	wait, err := open("wait", os.O_RDONLY)
	if err != nil {
		return ExitFailed, &Error{ExitFailed, err}
	}
	defer wait.Close()

	if o.Stdin != nil {
		in, err := open("data", os.O_WRONLY)
		if err != nil {
			return ExitFailed, &Error{ExitFailed, err}
		}
		// Not waited for: a terminal's stdin may never end.
		go func() {
			copyBuf(in, o.Stdin, make([]byte, 256<<10))
			_ = say("closestdin")
			in.Close()
		}()
	} else if err := say("closestdin"); err != nil {
		return ExitFailed, &Error{ExitFailed, err}
	}

	var copies sync.WaitGroup
	copies.Add(2)
	go func() {
		defer copies.Done()
		copyBuf(o.Stdout, out, make([]byte, 1<<20))
	}()
	go func() {
		defer copies.Done()
		copyBuf(o.Stderr, errf, make([]byte, 64<<10))
	}()

	stopSignals := make(chan struct{})
	defer close(stopSignals)
	go func() {
		seen := 0
		for {
			select {
			case s := <-o.Signals:
				seen++
				verb := "kill KILL"
				if sig, ok := s.(syscall.Signal); ok && seen == 1 {
					verb = "kill " + strings.TrimPrefix(unix.SignalName(sig), "SIG")
				}
				_ = say(verb)
			case <-stopSignals:
				return
			case <-ctx.Done():
				_ = say("kill KILL")
				return
			}
		}
	}()

	line, err := io.ReadAll(wait)
	if err != nil {
		return ExitFailed, &Error{ExitFailed, fmt.Errorf("wait: %w", err)}
	}
	// What the command left running holds its output open: it ends
	// with the connection anyway, so end it now and drain the streams.
	_ = say("kill KILL")
	copies.Wait()
	return status(string(line))
}

// copyBuf copies with buf's size per read. io.CopyBuffer would hand an
// *os.File destination the source (ReadFrom), which reads 32 KiB at a
// time: each read of a cmd/ stream is a FUSE round trip.
func copyBuf(dst io.Writer, src io.Reader, buf []byte) {
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// status reads a wait line: "pid ms exit CODE" or "pid ms signal NAME".
func status(line string) (int, error) {
	f := strings.Fields(line)
	if len(f) >= 4 && f[2] == "exit" {
		if code, err := strconv.Atoi(f[3]); err == nil {
			return code, nil
		}
	}
	if len(f) >= 4 && f[2] == "signal" {
		if sig := unix.SignalNum("SIG" + f[3]); sig != 0 {
			return exitSignalBase + int(sig), nil
		}
	}
	return ExitFailed, &Error{ExitFailed, fmt.Errorf("the command's end is not known: wait said %q", strings.TrimSpace(line))}
}

// describe adds the reason a memohfs file gives (the connection's status
// error line, or the bot's err) to an errno.
func describe(err error, why string) error {
	b, rerr := os.ReadFile(why)
	if rerr != nil {
		return err
	}
	reason := strings.TrimSpace(string(b))
	if filepath.Base(why) == "status" {
		reason = ""
		for _, l := range strings.Split(string(b), "\n") {
			if r, ok := strings.CutPrefix(l, "error "); ok {
				reason = r
			}
		}
	}
	if reason == "" {
		return err
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return fmt.Errorf("%s (%w)", reason, errno)
	}
	return fmt.Errorf("%s (%w)", reason, err)
}
