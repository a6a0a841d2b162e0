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
// between containerd and its shim leaves both (containerd gives up on the
// shim and drops it, the shim makes the container anyway): a new task of
// id is then refused ("container with id exists") and the shim runs for
// ever. A delete cut off after the shim deleted its container can leave
// the shim. Call it only when containerd holds no task for id (under the
// bot's operation lock): then nothing of id is rightfully running.
func (c *Containerd) endOrphans(ctx context.Context, id string) (string, error) {
	var ended []string
	root := filepath.Join(c.cfg.RuncRoot, c.cfg.Namespace)
	if _, err := os.Lstat(filepath.Join(root, id, "state.json")); err == nil {
		// Kills every process of it, removes its cgroup and its state.
		out, err := exec.CommandContext(ctx, c.cfg.Runc, "--root", root, "delete", "--force", id).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("delete orphaned runc container %s: %v: %s", id, err, bytesTrim(out))
		}
		ended = append(ended, "runc container "+id)
	}
	for _, pid := range c.shimsOf(id) {
		if err := c.killShim(ctx, pid, id); err != nil {
			return strings.Join(ended, ", "), err
		}
		ended = append(ended, fmt.Sprintf("shim %d of %s", pid, id))
	}
	if len(ended) == 0 {
		return "", nil
	}
	what := "orphaned " + strings.Join(ended, ", ")
	slog.WarnContext(ctx, "ended what ran of a container containerd holds no task for", "container", id, "ended", strings.Join(ended, ", "))
	return what, nil
}

func bytesTrim(b []byte) string { return strings.TrimSpace(string(b)) }

// shimsOf lists the live processes whose command line is a runc shim of
// container id in this namespace, started by this containerd.
func (c *Containerd) shimsOf(id string) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if c.isShimOf(pid, id) {
			out = append(out, pid)
		}
	}
	return out
}

// isShimOf reports whether pid's command line is that of a runc shim of
// container id in this namespace, speaking to this containerd.
func (c *Containerd) isShimOf(pid int, id string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(b) == 0 {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	if filepath.Base(args[0]) != "containerd-shim-runc-v2" {
		return false
	}
	flag := func(name string) string {
		for i, a := range args {
			if a == name && i+1 < len(args) {
				return args[i+1]
			}
			if v, ok := strings.CutPrefix(a, name+"="); ok {
				return v
			}
		}
		return ""
	}
	return flag("-namespace") == c.cfg.Namespace && flag("-id") == id &&
		filepath.Clean(strings.TrimPrefix(flag("-address"), "unix://")) == filepath.Clean(strings.TrimPrefix(c.cfg.Address, "unix://"))
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
	if !c.isShimOf(pid, id) {
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
