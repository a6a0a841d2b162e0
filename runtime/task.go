package runtime

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// killTimeout bounds the wait for a task to die after SIGKILL.
const killTimeout = 15 * time.Second

// Start starts the bot's task with its own pinned network namespace on the
// bridge. A running (or paused) task is left alone. Anything Start sets up
// is undone if a later step fails.
func (c *Containerd) Start(ctx context.Context, bot string) (_ TaskInfo, err error) {
	defer native(&err)
	ctx = c.ns(ctx)
	ctr, err := c.load(ctx, bot)
	if err != nil {
		return TaskInfo{}, err
	}
	id := ctr.ID()
	if task, err := ctr.Task(ctx, nil); err == nil {
		st, err := task.Status(ctx)
		if err != nil && !errdefs.IsNotFound(err) {
			return TaskInfo{}, fmt.Errorf("task of bot %q: %w", bot, err)
		}
		switch st.Status {
		case containerd.Running, containerd.Paused, containerd.Pausing:
			return c.Task(ctx, bot)
		}
	} else if !errdefs.IsNotFound(err) {
		return TaskInfo{}, fmt.Errorf("task of bot %q: %w", bot, err)
	}
	// Exited, created and never started (a crash mid-start), or held by
	// containerd but not described (a crash mid-delete): clear it so a
	// fresh task can be made.
	if _, err := c.endLeftoverTask(ctx, id); err != nil {
		return TaskInfo{}, fmt.Errorf("clear the old task of bot %q: %w", bot, err)
	}
	c.starting.RLock()
	defer c.starting.RUnlock()
	if err := c.releaseNetwork(ctx, ctr); err != nil {
		return TaskInfo{}, err
	}

	nsPath, ip, err := c.net.setup(ctx, id)
	if err != nil {
		return TaskInfo{}, err
	}
	defer func() {
		if err != nil {
			rctx, cancel := detach(ctx)
			defer cancel()
			if rerr := c.net.teardown(rctx, id, nsPath); rerr != nil {
				slog.WarnContext(ctx, "release network after failed start", "bot", bot, "err", rerr)
			}
			if rerr := ctr.Update(rctx, withNetwork("", "")); rerr != nil {
				slog.WarnContext(ctx, "clear network labels after failed start", "bot", bot, "err", rerr)
			}
		}
	}()
	if err := ctr.Update(ctx, withNetwork(nsPath, ip)); err != nil {
		return TaskInfo{}, fmt.Errorf("attach network to bot %q: %w", bot, err)
	}
	task, err := ctr.NewTask(ctx, cio.LogFile(c.cfg.LogPath(bot)))
	if errdefs.IsAlreadyExists(err) {
		// A task entry the look-up above could not see: end it, once.
		if _, lerr := c.endLeftoverTask(ctx, id); lerr != nil {
			return TaskInfo{}, fmt.Errorf("create task of bot %q: %w (clearing the old task: %v)", bot, err, lerr)
		}
		task, err = ctr.NewTask(ctx, cio.LogFile(c.cfg.LogPath(bot)))
	}
	if err != nil {
		return TaskInfo{}, fmt.Errorf("create task of bot %q: %w", bot, err)
	}
	if err := task.Start(ctx); err != nil {
		rctx, cancel := detach(ctx)
		defer cancel()
		_, _ = task.Delete(rctx, containerd.WithProcessKill)
		return TaskInfo{}, fmt.Errorf("start task of bot %q: %w", bot, err)
	}
	return TaskInfo{Bot: bot, ContainerID: id, State: TaskRunning, Pid: task.Pid(), IP: ip}, nil
}

// withNetwork points the spec's network namespace at the pinned one and
// records it in labels, so it can be released after a daemon restart.
func withNetwork(nsPath, ip string) containerd.UpdateContainerOpts {
	return func(ctx context.Context, client *containerd.Client, r *containers.Container) error {
		var spec oci.Spec
		if err := typeurl.UnmarshalTo(r.Spec, &spec); err != nil {
			return err
		}
		if err := oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: nsPath})(ctx, nil, nil, &spec); err != nil {
			return err
		}
		any, err := typeurl.MarshalAny(&spec)
		if err != nil {
			return err
		}
		r.Spec = any
		if r.Labels == nil {
			r.Labels = map[string]string{}
		}
		if nsPath == "" {
			delete(r.Labels, LabelNetNS)
			delete(r.Labels, LabelIP)
		} else {
			r.Labels[LabelNetNS], r.Labels[LabelIP] = nsPath, ip
		}
		return nil
	}
}

// releaseNetwork tears down the network recorded on the container (and any
// IPAM lease of its id) and clears the record.
func (c *Containerd) releaseNetwork(ctx context.Context, ctr containerd.Container) error {
	labels, err := ctr.Labels(ctx)
	if err != nil {
		return err
	}
	nsPath := labels[LabelNetNS]
	_, leased := c.net.leased(ctr.ID())
	if nsPath == "" && !leased {
		return nil
	}
	if err := c.net.teardown(ctx, ctr.ID(), nsPath); err != nil {
		return err
	}
	if nsPath != "" {
		if err := ctr.Update(ctx, withNetwork("", "")); err != nil {
			return fmt.Errorf("clear network of %s: %w", ctr.ID(), err)
		}
	}
	return nil
}

// Stop stops the bot's task: SIGTERM, up to grace, then SIGKILL to every
// process in the container. The task is deleted and the network released.
func (c *Containerd) Stop(ctx context.Context, bot string, grace time.Duration) (_ TaskInfo, err error) {
	defer native(&err)
	ctx = c.ns(ctx)
	ctr, err := c.load(ctx, bot)
	if err != nil {
		return TaskInfo{}, err
	}
	ti := TaskInfo{Bot: bot, ContainerID: ctr.ID(), State: TaskNone}
	task, err := ctr.Task(ctx, nil)
	switch {
	case err == nil:
		es, err := stopTask(ctx, task, grace, func(ctx context.Context) error {
			if fz := c.freezerOf(ctx, ctr); fz != nil {
				return fz.set(ctx, false)
			}
			return nil
		})
		if err != nil {
			return TaskInfo{}, fmt.Errorf("stop bot %q: %w", bot, err)
		}
		if es != nil {
			ti.HasExited, ti.ExitCode, ti.ExitedAt = true, es.ExitCode(), es.ExitTime()
		}
	case !errdefs.IsNotFound(err):
		return TaskInfo{}, fmt.Errorf("task of bot %q: %w", bot, err)
	}
	// A task the look-up could not see, or that went out of sight
	// before stopTask could delete it, still holds a shim.
	if _, err := c.endLeftoverTask(ctx, ctr.ID()); err != nil {
		return ti, fmt.Errorf("stop bot %q: %w", bot, err)
	}
	if err := c.releaseNetwork(ctx, ctr); err != nil {
		return ti, fmt.Errorf("stop bot %q: %w", bot, err)
	}
	return ti, nil
}

// stopTask ends task: SIGTERM, grace, SIGKILL to all, delete. thaw lets
// its cgroup go if the delete finds it frozen.
func stopTask(ctx context.Context, task containerd.Task, grace time.Duration, thaw func(context.Context) error) (*containerd.ExitStatus, error) {
	st, err := task.Status(ctx)
	if err != nil {
		return nil, err
	}
	if st.Status == containerd.Paused || st.Status == containerd.Pausing {
		// A frozen task cannot act on SIGTERM.
		if err := task.Resume(ctx); err != nil && !errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("resume: %w", err)
		}
		st.Status = containerd.Running
	}
	if st.Status == containerd.Running {
		exited, err := task.Wait(ctx)
		if err != nil {
			return nil, fmt.Errorf("wait: %w", err)
		}
		if err := task.Kill(ctx, syscall.SIGTERM); err != nil && !errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("SIGTERM: %w", err)
		}
		timer := time.NewTimer(grace)
		defer timer.Stop()
		select {
		case <-exited:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
			if err := task.Kill(ctx, syscall.SIGKILL, containerd.WithKillAll); err != nil && !errdefs.IsNotFound(err) {
				return nil, fmt.Errorf("SIGKILL: %w", err)
			}
			select {
			case <-exited:
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(killTimeout):
				return nil, fmt.Errorf("task %d did not exit %s after SIGKILL: %w", task.Pid(), killTimeout, errdefs.ErrUnknown)
			}
		}
	}
	es, err := task.Delete(ctx, containerd.WithProcessKill)
	if err != nil && !errdefs.IsNotFound(err) && strings.Contains(err.Error(), "paused") {
		// runc's kill --all freezes a v1 cgroup around the signal; a
		// freeze that races the processes' exit can stay FREEZING, and
		// runc then calls the dead task paused. Thaw, and once more.
		if terr := thaw(ctx); terr != nil {
			return nil, fmt.Errorf("delete task: %w (thaw: %v)", err, terr)
		}
		es, err = task.Delete(ctx, containerd.WithProcessKill)
	}
	if err != nil && !errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("delete task: %w", err)
	}
	return es, nil
}

// Task reads the state of the bot's own task, by its container.
func (c *Containerd) Task(ctx context.Context, bot string) (_ TaskInfo, err error) {
	defer native(&err)
	ctx = c.ns(ctx)
	ctr, err := c.load(ctx, bot)
	if err != nil {
		return TaskInfo{}, err
	}
	ti := TaskInfo{Bot: bot, ContainerID: ctr.ID(), State: TaskNone}
	task, err := ctr.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return ti, nil
	}
	if err != nil {
		return TaskInfo{}, fmt.Errorf("task of bot %q: %w", bot, err)
	}
	st, err := task.Status(ctx)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return ti, nil
		}
		return TaskInfo{}, fmt.Errorf("task of bot %q: %w", bot, err)
	}
	ti.Pid = task.Pid()
	switch st.Status {
	case containerd.Running:
		ti.State = TaskRunning
	case containerd.Paused, containerd.Pausing:
		ti.State = TaskPaused
	case containerd.Created:
		ti.State = TaskCreated
	case containerd.Stopped:
		ti.State = TaskStopped
		ti.HasExited, ti.ExitCode, ti.ExitedAt = true, st.ExitStatus, st.ExitTime
	default:
		ti.State = TaskUnknown
	}
	if ti.State == TaskRunning || ti.State == TaskPaused {
		if labels, err := ctr.Labels(ctx); err == nil {
			ti.IP = labels[LabelIP]
		}
	}
	return ti, nil
}

// Exec runs args in the bot's running task, with its own FIFOs under the
// configured FIFO dir, and returns the exit code.
func (c *Containerd) Exec(ctx context.Context, bot string, args []string, stdout, stderr io.Writer) (_ int, err error) {
	defer native(&err)
	if len(args) == 0 {
		return -1, fmt.Errorf("exec: no command: %w", errdefs.ErrInvalidArgument)
	}
	ctx = c.ns(ctx)
	ctr, err := c.load(ctx, bot)
	if err != nil {
		return -1, err
	}
	task, err := ctr.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return -1, fmt.Errorf("bot %q is not running: %w", bot, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return -1, err
	}
	spec, err := ctr.Spec(ctx)
	if err != nil {
		return -1, err
	}
	pspec := *spec.Process
	pspec.Args = args
	pspec.Terminal = false
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	execID := "exec-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	proc, err := task.Exec(ctx, execID, &pspec,
		cio.NewCreator(cio.WithStreams(nil, stdout, stderr), cio.WithFIFODir(c.cfg.FIFODir)))
	if err != nil {
		if errdefs.IsNotFound(err) || errdefs.IsFailedPrecondition(err) {
			return -1, fmt.Errorf("bot %q is not running: %w", bot, errdefs.ErrFailedPrecondition)
		}
		return -1, fmt.Errorf("exec in bot %q: %w", bot, err)
	}
	dctx, cancel := detach(ctx)
	defer cancel()
	defer proc.Delete(dctx, containerd.WithProcessKill)
	statusC, err := proc.Wait(ctx)
	if err != nil {
		return -1, err
	}
	if err := proc.Start(ctx); err != nil {
		return -1, fmt.Errorf("exec in bot %q: %w", bot, err)
	}
	var st containerd.ExitStatus
	select {
	case st = <-statusC:
	case <-ctx.Done():
		_ = proc.Kill(dctx, syscall.SIGKILL)
		return -1, ctx.Err()
	}
	// Drain the FIFOs before Delete closes them, or output is lost.
	proc.IO().Wait()
	code, _, err := st.Result()
	if err != nil {
		return -1, err
	}
	return int(code), nil
}
