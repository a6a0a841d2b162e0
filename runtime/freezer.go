package runtime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
)

// cgroupRoot is where the cgroup hierarchies are mounted.
var cgroupRoot = "/sys/fs/cgroup"

// freezeTimeout bounds the wait for every process of a bot to stop; a
// task stuck in uninterruptible sleep can keep a cgroup FREEZING forever.
const freezeTimeout = 5 * time.Second

// freeze stops every process of a running task and returns the function
// that lets them go again. It writes the container's cgroup freezer
// directly (v1 freezer.state or v2 cgroup.freeze): the same kernel
// mechanism `runc pause` uses, without two runc executions through the
// shim (~20 ms each on this machine kind) inside the pause. When the
// cgroup cannot be found (a systemd cgroup path, an odd mount) it falls
// back to the task's Pause and Resume.
func (c *Containerd) freeze(ctx context.Context, ctr containerd.Container, task containerd.Task) (thaw func(context.Context) error, err error) {
	if fz := c.freezerOf(ctx, ctr); fz != nil {
		if err := fz.set(ctx, true); err != nil {
			if terr := fz.set(context.WithoutCancel(ctx), false); terr != nil {
				err = errors.Join(err, terr)
			}
			return nil, err
		}
		return func(ctx context.Context) error { return fz.set(ctx, false) }, nil
	}
	if err := task.Pause(ctx); err != nil {
		return nil, err
	}
	return task.Resume, nil
}

type freezer struct {
	v2   bool
	path string // the cgroup's directory
}

// freezerOf finds the container's freezer cgroup, or nil.
func (c *Containerd) freezerOf(ctx context.Context, ctr containerd.Container) *freezer {
	spec, err := ctr.Spec(ctx)
	if err != nil || spec.Linux == nil {
		return nil
	}
	p := spec.Linux.CgroupsPath
	if !strings.HasPrefix(p, "/") || strings.Contains(p, ":") || strings.Contains(p, "..") {
		return nil // systemd "slice:prefix:name" or relative: not ours to guess
	}
	if _, err := os.Stat(filepath.Join(cgroupRoot, "cgroup.controllers")); err == nil {
		dir := filepath.Join(cgroupRoot, p)
		if _, err := os.Stat(filepath.Join(dir, "cgroup.freeze")); err == nil {
			return &freezer{v2: true, path: dir}
		}
		return nil
	}
	dir := filepath.Join(cgroupRoot, "freezer", p)
	if _, err := os.Stat(filepath.Join(dir, "freezer.state")); err == nil {
		return &freezer{path: dir}
	}
	return nil
}

// set freezes or thaws and waits until the kernel says it is done.
//
// A v1 freezer can stay FREEZING for good when a task was forked (or is
// in vfork) as the freeze began; like runc, it is then thawed for a moment
// and frozen again, until it takes or the deadline passes.
func (f *freezer) set(ctx context.Context, frozen bool) error {
	file, want, done := "freezer.state", "THAWED", "THAWED"
	if frozen {
		want, done = "FROZEN", "FROZEN"
	}
	if f.v2 {
		file, want, done = "cgroup.freeze", "0", "frozen 0"
		if frozen {
			want, done = "1", "frozen 1"
		}
	}
	write := func(v string) error {
		if err := os.WriteFile(filepath.Join(f.path, file), []byte(v), 0); err != nil {
			return fmt.Errorf("freezer %s: %w", f.path, err)
		}
		return nil
	}
	deadline := time.Now().Add(freezeTimeout)
	for attempt := 0; ; attempt++ {
		if attempt > 0 && frozen && !f.v2 {
			// Stuck FREEZING: let go for a moment, then try again.
			if err := write("THAWED"); err != nil {
				return err
			}
			time.Sleep(time.Duration(min(attempt, 10)) * time.Millisecond)
		}
		if err := write(want); err != nil {
			return err
		}
		// Most freezes take well under a millisecond; give this attempt
		// about 20 ms before starting over.
		for wait, waited := 20*time.Microsecond, time.Duration(0); waited < 20*time.Millisecond || f.v2; wait = min(2*wait, 2*time.Millisecond) {
			ok, err := f.is(done)
			if err != nil {
				return err
			}
			if ok {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("freezer %s: not %s after %s (a process in uninterruptible sleep?)", f.path, strings.ToLower(want), freezeTimeout)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
			waited += wait
		}
	}
}

func (f *freezer) is(state string) (bool, error) {
	if !f.v2 {
		b, err := os.ReadFile(filepath.Join(f.path, "freezer.state"))
		return string(bytes.TrimSpace(b)) == state, err
	}
	b, err := os.ReadFile(filepath.Join(f.path, "cgroup.events"))
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if line == state {
			return true, nil
		}
	}
	return false, nil
}
