package mount

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// State of a mount point.
type State int

const (
	NotMounted State = iota
	Mounted          // a live mount
	Stale            // a mount whose server is gone (ENOTCONN)
)

func (s State) String() string {
	return [...]string{"not mounted", "mounted", "stale"}[s]
}

// Mode says how an unmount went.
type Mode string

const (
	Clean    Mode = "clean" // unmounted
	Lazy     Mode = "lazy"  // detached while busy; freed when its users let go
	NotThere Mode = "not mounted"
)

// fstype is the type of the mount at dir ("" when dir is not a mount
// point), from /proc/self/mountinfo: never touching the mount itself,
// which could hang if its server does.
func fstype(dir string) (string, error) {
	ms, err := mountsOn(dir)
	if err != nil || len(ms) == 0 {
		return "", err
	}
	return ms[len(ms)-1].FSType, nil // the mount on top
}

// Check tells whether dir is a live mount, a stale one, or no mount. A
// FUSE mount whose server does not answer within a second counts as stale.
func Check(dir string) (State, error) {
	typ, err := fstype(dir)
	if err != nil {
		return NotMounted, err
	}
	if typ == "" {
		return NotMounted, nil
	}
	done := make(chan error, 1)
	go func() {
		// statfs, not stat: the kernel answers stat from its cache, but
		// always asks the server for statfs.
		var st syscall.Statfs_t
		done <- syscall.Statfs(dir, &st)
	}()
	select {
	case err := <-done:
		if errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED) {
			return Stale, nil
		}
		return Mounted, nil
	case <-time.After(time.Second):
		if strings.HasPrefix(typ, "fuse") {
			return Stale, nil // its server hangs
		}
		return Mounted, nil
	}
}

// ClearStale clears the mount on dir if its server is gone or hangs: the
// connection is aborted (so whatever waits on it, the dead server's own
// threads included, gets ECONNABORTED and can go) and the mount detached.
// A live mount, or none, is left alone. It reports whether it cleared one.
func ClearStale(dir string) (bool, error) {
	st, err := Check(dir)
	if err != nil || st != Stale {
		return false, err
	}
	return true, clearStale(dir)
}

func clearStale(dir string) error {
	abort(dir)
	if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("clear the stale mount on %s: %w", dir, err)
	}
	return nil
}

// abort aborts the FUSE connection of the mount on dir through fusectl,
// so nothing stays stuck on a server that hangs.
func abort(dir string) {
	if entries, _ := os.ReadDir("/sys/fs/fuse/connections"); len(entries) == 0 {
		syscall.Mount("fusectl", "/sys/fs/fuse/connections", "fusectl", 0, "")
	}
	ms, _ := mountsOn(dir)
	for _, m := range ms {
		os.WriteFile(filepath.Join("/sys/fs/fuse/connections", strconv.FormatUint(uint64(unix.Minor(m.Dev)), 10), "abort"), []byte("1"), 0)
	}
}

// Unmount unmounts dir: plainly, retried while busy for up to wait, then
// lazily. It says which happened.
func Unmount(dir string, wait time.Duration) (Mode, error) {
	typ, err := fstype(dir)
	if err != nil {
		return "", err
	}
	if typ == "" {
		return NotThere, nil
	}
	deadline := time.Now().Add(wait)
	for {
		err := syscall.Unmount(dir, 0)
		if err == nil {
			return Clean, nil
		}
		if errors.Is(err, syscall.EINVAL) {
			return NotThere, nil
		}
		if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
		return "", fmt.Errorf("lazy unmount of %s: %w", dir, err)
	}
	return Lazy, nil
}

// DetachSubmounts detaches, lazily, each mount right on the memohfs
// mount at dir (the data/ binds memohfs put there), leaving the mount on
// dir itself for Unmount: a live mount with binds is busy (the daemon
// holds each bind's fd), so none of it unmounts plainly until they go. It
// says how many it detached.
//
// Only the top mounts under dir are named, and their paths run through
// memohfs's own nodes only: a mount below one of them (inside a bot's
// data, a path the bot controls) is never named; it goes with its parent
// (MNT_DETACH takes the whole subtree). UMOUNT_NOFOLLOW: a symlink at a
// named path is not followed. The table is read from
// /proc/self/mountinfo, never touching a mount, which could hang if its
// server does. A mount already gone (EINVAL) is no error; any other
// failure leaves that mount, is joined into the error ("detach PATH:
// ..."), and the others are still detached.
func DetachSubmounts(dir string) (int, error) {
	dir = filepath.Clean(dir)
	all, err := Submounts(dir)
	if err != nil {
		return 0, fmt.Errorf("detach the mounts under %s: %w", dir, err)
	}
	var below []string
	for _, m := range all {
		if m.MountPoint != dir {
			below = append(below, m.MountPoint)
		}
	}
	isMount := map[string]bool{}
	for _, mp := range below {
		isMount[mp] = true
	}
	n := 0
	var errs []error
	for _, mp := range below {
		top := true
		for p := filepath.Dir(mp); p != dir && len(p) > len(dir); p = filepath.Dir(p) {
			if isMount[p] {
				top = false
				break
			}
		}
		if !top {
			continue
		}
		if err := unix.Unmount(mp, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err == nil {
			n++
		} else if !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("detach %s: %w", mp, err))
		}
	}
	return n, errors.Join(errs...)
}

// ServeOptions tune Serve.
type ServeOptions struct {
	// UnmountWait is how long a busy mount is retried before the lazy
	// unmount; 5s when zero.
	UnmountWait time.Duration
	// Stopping runs when a signal asks to stop, before the unmount (end
	// blocking readers, say).
	Stopping func()
	// Reload runs on SIGHUP.
	Reload func()
	// Signals, from Trap, when the caller started catching signals
	// before it mounted; nil: Serve starts catching them itself.
	Signals <-chan os.Signal
	Logger  *slog.Logger
}

// Trap starts catching SIGINT, SIGTERM and SIGHUP now, for Serve (through
// ServeOptions.Signals). Call it first thing: a signal that comes while
// the daemon starts (after the mount is up, before Serve runs) is kept
// and acted on, instead of killing the process with its mount left
// behind.
func Trap() <-chan os.Signal {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	return sigs
}

// Waiter is a FUSE server: Wait returns once it has stopped serving.
type Waiter interface{ Wait() }

// Serve serves until SIGINT or SIGTERM (or ctx ends), then unmounts dir
// and returns once the server has stopped or, after a lazy unmount, at
// once: the process may exit, which ends the connection.
func Serve(ctx context.Context, server Waiter, dir string, o ServeOptions) (Mode, error) {
	if o.UnmountWait == 0 {
		o.UnmountWait = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	sigs := o.Signals
	if sigs == nil {
		own := make(chan os.Signal, 4)
		signal.Notify(own, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
		defer signal.Stop(own)
		sigs = own
	}
	served := make(chan struct{})
	go func() { server.Wait(); close(served) }()
	for {
		select {
		case <-served:
			o.Logger.Warn("the mount went away (unmounted from outside)", "dir", dir)
			return NotThere, nil
		case <-ctx.Done():
			return stop(server, dir, o, served)
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				o.Logger.Info("SIGHUP: reload")
				if o.Reload != nil {
					o.Reload()
				}
				continue
			}
			o.Logger.Info("stopping", "signal", sig.String())
			return stop(server, dir, o, served)
		}
	}
}

func stop(server Waiter, dir string, o ServeOptions, served chan struct{}) (Mode, error) {
	if o.Stopping != nil {
		o.Stopping()
	}
	mode, err := Unmount(dir, o.UnmountWait)
	if err != nil {
		return mode, err
	}
	switch mode {
	case Clean, NotThere:
		select {
		case <-served:
		case <-time.After(5 * time.Second):
		}
	case Lazy:
		o.Logger.Warn("the mount was busy: detached it; it goes when its last user lets go", "dir", dir)
	}
	return mode, nil
}
