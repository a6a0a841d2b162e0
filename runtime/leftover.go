package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/api/services/tasks/v1"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// EndLeftoverTask ends the bot's task unless it is live (running, paused,
// pausing) and says what it ended ("" when nothing): see endLeftoverTask.
func (c *Containerd) EndLeftoverTask(ctx context.Context, bot string) (_ string, err error) {
	defer native(&err)
	ctx = c.ns(ctx)
	ctr, err := c.load(ctx, bot)
	if err != nil {
		return "", err
	}
	return c.endLeftoverTask(ctx, ctr.ID())
}

// endLeftoverTask ends the task containerd holds for container id unless
// it is live (running, paused, pausing): one containerd holds but cannot
// describe, because its shim no longer has the container (a delete cut
// off between containerd and the shim, as by a kill -9 of the client,
// leaves that: Get and Container.Task answer NotFound, `ctr tasks ls`
// leaves it out, a new task is refused AlreadyExists, and the shim keeps
// running), or one created and never started, stopped, or in an unknown
// state. Every process of it gets SIGKILL, then it is deleted through the
// task service, which also ends its shim. When containerd holds no task
// for id, what of id runs without it knowing is ended (endOrphans). What
// it ended is logged and returned ("" when there was none); afterwards
// nothing of id runs but a live task.
func (c *Containerd) endLeftoverTask(ctx context.Context, id string) (string, error) {
	ts := c.client.TaskService()
	state := "not described by its shim"
	r, err := ts.Get(ctx, &tasks.GetRequest{ContainerID: id})
	switch {
	case err == nil:
		switch r.Process.GetStatus() {
		case tasktypes.Status_RUNNING, tasktypes.Status_PAUSED, tasktypes.Status_PAUSING:
			return "", nil
		}
		state = strings.ToLower(r.Process.GetStatus().String())
	case noTaskEntry(err, id):
		return c.endOrphans(ctx, id)
	case !errdefs.IsNotFound(errgrpc.ToNative(err)):
		return "", fmt.Errorf("task %s: %w", id, errgrpc.ToNative(err))
	}
	// SIGKILL first: a task that is only half there may still have
	// processes; one with none answers NotFound.
	_, kerr := ts.Kill(ctx, &tasks.KillRequest{ContainerID: id, Signal: uint32(syscall.SIGKILL), All: true})
	if kerr != nil {
		kerr = errgrpc.ToNative(kerr)
	}
	_, err = ts.Delete(ctx, &tasks.DeleteTaskRequest{ContainerID: id})
	if noTaskEntry(err, id) {
		return "", nil // gone meanwhile
	}
	// NotFound also when containerd did delete it: the shim had nothing
	// to delete, and containerd removed the task and ended the shim.
	if err != nil && !errdefs.IsNotFound(errgrpc.ToNative(err)) {
		return "", fmt.Errorf("delete leftover task %s (%s; SIGKILL: %v): %w", id, state, kerr, errgrpc.ToNative(err))
	}
	what := fmt.Sprintf("leftover task %s (%s)", id, state)
	slog.WarnContext(ctx, "ended a leftover task", "container", id, "state", state, "sigkill", errString(kerr))
	return what, nil
}

// noTaskEntry reports whether err is the task service's answer for a
// container it holds no task for at all (rather than one whose shim
// cannot describe it, also NotFound).
func noTaskEntry(err error, id string) bool {
	s, ok := status.FromError(err)
	return ok && s.Code() == codes.NotFound && s.Message() == "task "+id+" not found"
}

func errString(err error) string {
	if err == nil {
		return "sent"
	}
	return err.Error()
}

// endOrphans ends what of container id runs while containerd holds no
// task for it: the runc container of id in the runtime's runc root, and
// every shim of id that speaks to this containerd. A create cut off
// between containerd and its shim can leave both (containerd gives up on
// the shim and drops it, the shim makes the container anyway): a new task
// of id is then refused ("container with id exists") and the shim runs
// for ever. A delete cut off after the shim deleted its container can
// leave the shim. Call it only when containerd holds no task for id
// (under the bot's operation lock): then nothing of id is rightfully
// running. containerd's own clean-up of a shim it gave up on (its
// `start` and `delete` helper processes) is waited for, never disturbed.
func (c *Containerd) endOrphans(ctx context.Context, id string) (string, error) {
	deadline := time.Now().Add(killTimeout)
	shims, err := c.helpersDone(ctx, id, deadline)
	if err != nil {
		return "", err
	}
	var ended []string
	for _, pid := range shims {
		if err := c.killShim(ctx, pid, id); err != nil {
			return "", err
		}
		ended = append(ended, fmt.Sprintf("shim %d of %s", pid, id))
	}
	if len(shims) > 0 {
		// containerd cleans up after a shim that was its (a `delete`
		// helper), as after any shim's exit.
		if _, err := c.helpersDone(ctx, id, deadline); err != nil {
			return "", err
		}
	}
	// Once a shim it knew is gone, containerd deletes its runc container
	// itself (a `delete` helper); either delete may find the other's done.
	root := filepath.Join(c.cfg.RuncRoot, c.cfg.Namespace)
	state := filepath.Join(root, id, "state.json")
	if _, err := os.Lstat(state); err == nil {
		// Kills every process of it, removes its cgroup and its state.
		out, err := exec.CommandContext(ctx, c.cfg.Runc, "--root", root, "delete", "--force", id).CombinedOutput()
		for err != nil {
			if _, serr := os.Lstat(state); errors.Is(serr, os.ErrNotExist) {
				break
			}
			if time.Now().After(deadline) {
				return "", fmt.Errorf("delete orphaned runc container %s: %v: %s", id, err, strings.TrimSpace(string(out)))
			}
			if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
				return "", err
			}
			out, err = exec.CommandContext(ctx, c.cfg.Runc, "--root", root, "delete", "--force", id).CombinedOutput()
		}
		ended = append(ended, "runc container "+id)
	}
	if len(ended) == 0 {
		return "", nil
	}
	what := "orphaned " + strings.Join(ended, ", ")
	slog.WarnContext(ctx, "ended what ran of a container containerd holds no task for", "container", id, "ended", strings.Join(ended, ", "))
	return what, nil
}

// helpersDone waits until no `start` or `delete` helper of containerd
// for id runs, and returns the shims of id then running.
func (c *Containerd) helpersDone(ctx context.Context, id string, deadline time.Time) ([]int, error) {
	for {
		shims, helpers := c.shimsOf(id)
		if len(helpers) == 0 {
			return shims, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("containerd's shim helpers %v of %s still run after %s: %w", helpers, id, killTimeout, errdefs.ErrUnavailable)
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// shimsOf lists the live runc shims of container id in this namespace
// that speak to this containerd: the long-running ones, and containerd's
// `start` and `delete` helper runs of the shim binary.
func (c *Containerd) shimsOf(id string) (shims, helpers []int) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		switch c.shimKind(pid, id) {
		case "shim":
			shims = append(shims, pid)
		case "helper":
			helpers = append(helpers, pid)
		}
	}
	return shims, helpers
}

// shimKind says whether pid's command line is that of a runc shim of
// container id in this namespace speaking to this containerd ("shim"),
// of a `start` or `delete` helper run of the shim binary for it
// ("helper"), or neither ("").
func (c *Containerd) shimKind(pid int, id string) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(b) == 0 {
		return ""
	}
	return shimArgsKind(strings.Split(strings.TrimRight(string(b), "\x00"), "\x00"), c.cfg.Namespace, id, c.cfg.Address)
}

// shimArgsKind classifies a command line as shimKind does. containerd
// starts a shim as `containerd-shim-runc-v2 -namespace NS -id ID -address
// ADDR [-debug]` and runs the binary as `... -bundle DIR start|delete`
// to start one or to clean up after one.
func shimArgsKind(args []string, namespace, id, address string) string {
	if len(args) == 0 || filepath.Base(args[0]) != "containerd-shim-runc-v2" {
		return ""
	}
	flag := func(name string) (string, bool) {
		for i, a := range args {
			if a == name && i+1 < len(args) {
				return args[i+1], true
			}
			if v, ok := strings.CutPrefix(a, name+"="); ok {
				return v, true
			}
		}
		return "", false
	}
	ns, _ := flag("-namespace")
	cid, _ := flag("-id")
	addr, _ := flag("-address")
	if ns != namespace || cid != id ||
		filepath.Clean(strings.TrimPrefix(addr, "unix://")) != filepath.Clean(strings.TrimPrefix(address, "unix://")) {
		return ""
	}
	if _, bundle := flag("-bundle"); bundle || args[len(args)-1] == "start" || args[len(args)-1] == "delete" {
		return "helper"
	}
	return "shim"
}

// killShim sends SIGKILL to the shim pid through a pidfd taken before its
// command line is checked again (so a pid reused meanwhile is never
// signalled) and waits for it to exit.
func (c *Containerd) killShim(ctx context.Context, pid int, id string) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pidfd of shim %d of %s: %w", pid, id, err)
	}
	defer unix.Close(fd)
	if c.shimKind(pid, id) != "shim" {
		return nil // exited, and the pid is another process's now
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("SIGKILL shim %d of %s: %w", pid, id, err)
	}
	// The pidfd turns readable once the process has exited.
	deadline := time.Now().Add(killTimeout)
	for {
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 100)
		if n > 0 {
			return nil
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("wait for shim %d of %s: %w", pid, id, err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("shim %d of %s did not exit %s after SIGKILL: %w", pid, id, killTimeout, errdefs.ErrUnknown)
		}
	}
}
