package control

import (
	"context"
	"time"

	"github.com/containerd/errdefs"
	"github.com/memohfs/memohfs/runtime"
	"github.com/memohfs/memohfs/store"
)

// apply takes the record a store write returned as the new live state.
func (b *bot) apply(rec store.Bot) {
	b.mu.Lock()
	b.load(rec)
	b.gen++
	b.mu.Unlock()
}

func detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
}

// start starts the bot and returns once it runs. A missing container is
// made again (on its old rootfs when that survived).
func (c *Controller) start(ctx context.Context, b *bot) error {
	prev := b.getState()
	if prev == store.StateRunning {
		return nil
	}
	b.setState(store.StateStarting)
	ti, err := c.rt.Start(ctx, b.name)
	if errdefs.IsNotFound(err) {
		if err = c.recreate(ctx, b); err == nil {
			ti, err = c.rt.Start(ctx, b.name)
		}
	}
	if err != nil {
		return c.failed(ctx, b, "start", err)
	}
	rec, err := c.st.SetState(ctx, b.id(), store.StateChange{
		State: store.StateRunning, Pid: int(ti.Pid), IP: ti.IP, Started: true,
		Event: &store.Event{Type: "start", Payload: map[string]any{"pid": ti.Pid, "ip": ti.IP}},
	})
	if err != nil {
		// Unrecorded, the start is undone: Postgres and containerd agree.
		dctx, cancel := detached(ctx)
		defer cancel()
		if _, serr := c.rt.Stop(dctx, b.name, c.opts.StopGrace); serr != nil {
			c.log.Error("undo an unrecorded start", "bot", b.name, "err", serr)
			b.setLive(store.StateError, 0, "")
		} else {
			b.setLive(prev, 0, "")
		}
		return wrap(err, "the start could not be recorded, so it was undone")
	}
	b.apply(rec)
	b.eventsRecorded()
	return nil
}

// recreate makes the bot's container again after it was lost.
func (c *Controller) recreate(ctx context.Context, b *bot) error {
	b.mu.Lock()
	ct := b.rec.Container
	b.mu.Unlock()
	info, err := c.rt.Create(ctx, runtime.BotSpec{Bot: b.name, DataDir: ct.DataPath, RootfsKey: ct.RootfsKey})
	if err != nil {
		return wrap(err, "re-create the missing container")
	}
	ev := &store.Event{Type: "recreate", Payload: map[string]any{"rootfs": info.RootfsKey, "kept": info.RootfsKey == ct.RootfsKey}}
	if err := c.st.SetRootfs(ctx, b.id(), info.RootfsKey, ev); err != nil {
		return wrap(err, "record the re-created container")
	}
	b.mu.Lock()
	b.rec.Container.RootfsKey = info.RootfsKey
	b.mu.Unlock()
	b.eventsRecorded()
	return nil
}

// stop stops the bot: SIGTERM, grace, SIGKILL. Stopping a bot that does
// not run is a no-op.
func (c *Controller) stop(ctx context.Context, b *bot, grace time.Duration) error {
	switch b.getState() {
	case store.StateCreated, store.StateStopped:
		// Nothing runs, but a task a crash left half made may hold a
		// shim that nothing else would end (the runtime logs what it
		// ends).
		if _, err := c.rt.EndLeftoverTask(ctx, b.name); err != nil && !errdefs.IsNotFound(err) {
			c.log.Warn("end a leftover task of a stopped bot", "bot", b.name, "err", err)
		}
		return nil
	}
	b.setState(store.StateStopping)
	ti, err := c.rt.Stop(ctx, b.name, grace)
	if err != nil && !errdefs.IsNotFound(err) {
		return c.failed(ctx, b, "stop", err)
	}
	var exit *int
	payload := map[string]any{}
	if ti.HasExited {
		code := int(ti.ExitCode)
		exit = &code
		payload["exit"] = code
	}
	rec, err := c.st.SetState(ctx, b.id(), store.StateChange{
		State: store.StateStopped, ExitCode: exit, Stopped: true,
		Event: &store.Event{Type: "stop", Payload: payload},
	})
	if err != nil {
		b.mu.Lock()
		b.state, b.pid, b.ip, b.exit = store.StateStopped, 0, "", exit
		b.gen++
		gen := b.gen
		b.mu.Unlock()
		c.recordLater(b, gen, store.StateChange{
			State: store.StateStopped, ExitCode: exit, Stopped: true,
			Event: &store.Event{Type: "stop", Payload: payload},
		})
		return wrap(err, "the bot stopped, but that could not be recorded yet (memohfs records it when Postgres answers again)")
	}
	b.apply(rec)
	b.eventsRecorded()
	return nil
}

// failed puts a bot whose operation failed in the error state, records
// that if it can, and returns the operation's error.
func (c *Controller) failed(ctx context.Context, b *bot, op string, opErr error) error {
	err := wrap(opErr, "")
	b.setLive(store.StateError, 0, "")
	dctx, cancel := detached(ctx)
	defer cancel()
	rec, serr := c.st.SetState(dctx, b.id(), store.StateChange{
		State: store.StateError, Error: err.Error(),
		Event: &store.Event{Type: "error", Payload: map[string]any{"op": op, "error": err.Error()}},
	})
	if serr == nil {
		b.apply(rec)
		b.eventsRecorded()
	}
	return err
}

func (b *bot) setLive(s store.State, pid int, ip string) {
	b.mu.Lock()
	if s != b.state {
		b.changed = time.Now()
	}
	b.state, b.pid, b.ip = s, pid, ip
	b.gen++
	b.mu.Unlock()
}

// followRuntime keeps live state from runtime task events, resubscribing
// (and re-reading every running bot's task) when the stream breaks.
func (c *Controller) followRuntime(ctx context.Context) {
	backoff := 200 * time.Millisecond
	for first := true; ctx.Err() == nil; first = false {
		sctx, cancel := context.WithCancel(ctx)
		events, errc := c.rt.Events(sctx)
		// Exits missed while the stream was broken. (Those from before
		// the daemon started are Reconcile's.)
		if !first {
			c.refreshRunning(ctx)
		}
		for ev := range events {
			backoff = 200 * time.Millisecond
			if ev.Type == runtime.EventExit {
				c.onExit(ev.Bot, ev.Pid, int(ev.ExitCode), ev.Time)
			}
		}
		err := <-errc
		cancel()
		if ctx.Err() != nil {
			return
		}
		c.log.Warn("runtime event stream broke; resubscribing", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// refreshRunning reads the task of every bot that is running, once.
func (c *Controller) refreshRunning(ctx context.Context) {
	c.mu.RLock()
	var running []*bot
	for _, b := range c.bots {
		if b.getState() == store.StateRunning {
			running = append(running, b)
		}
	}
	c.mu.RUnlock()
	for _, b := range running {
		c.refreshTask(ctx, b)
	}
}

// refreshTask reads a bot's task once: a task that ended while nobody
// watched is handled like an exit event.
func (c *Controller) refreshTask(ctx context.Context, b *bot) {
	ti, err := c.rt.Task(ctx, b.name)
	if err != nil {
		return // reconcile's business
	}
	b.mu.Lock()
	state, pid := b.state, b.pid
	b.mu.Unlock()
	switch {
	case ti.State == runtime.TaskRunning || ti.State == runtime.TaskPaused:
		if state != store.StateRunning || pid != int(ti.Pid) {
			b.mu.Lock()
			b.state, b.pid, b.ip = store.StateRunning, int(ti.Pid), ti.IP
			b.mu.Unlock()
		}
	case state == store.StateRunning && (ti.State == runtime.TaskStopped || ti.State == runtime.TaskNone):
		// Only a task known to be over: one the shim cannot say of now
		// (unknown, under load) or one made again is not stopped for it.
		at := ti.ExitedAt
		if at.IsZero() {
			at = time.Now()
		}
		c.onExit(b.name, uint32(pid), int(ti.ExitCode), at)
	}
}

// onExit marks a bot whose task ended by itself as stopped at once, then
// in the background deletes the task, releases its address and records
// the exit, unless an operation changed the bot in between.
func (c *Controller) onExit(name string, pid uint32, code int, at time.Time) {
	c.mu.RLock()
	b := c.bots[name]
	c.mu.RUnlock()
	if b == nil {
		return
	}
	b.mu.Lock()
	if b.state != store.StateRunning || b.pid != int(pid) {
		b.mu.Unlock()
		return // an operation is stopping it, or an older task
	}
	t := at.UTC()
	b.state, b.pid, b.ip, b.exit, b.stopped = store.StateStopped, 0, "", &code, &t
	b.gen++
	gen := b.gen
	b.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := b.lock(ctx); err != nil {
			return
		}
		defer b.unlock()
		b.mu.Lock()
		same := b.gen == gen
		b.mu.Unlock()
		if !same {
			return
		}
		if _, err := c.rt.Stop(ctx, name, 0); err != nil && !errdefs.IsNotFound(err) {
			c.log.Warn("clean up after an exited task", "bot", name, "err", err)
		}
		rec, err := c.st.SetState(ctx, b.id(), store.StateChange{
			State: store.StateStopped, ExitCode: &code, Stopped: true,
			Event: &store.Event{Type: "exit", Payload: map[string]any{"pid": pid, "exit": code}},
		})
		if err != nil {
			c.log.Warn("record an exit: retrying until Postgres answers", "bot", name, "err", err)
			c.recordLater(b, gen, store.StateChange{
				State: store.StateStopped, ExitCode: &code, Stopped: true,
				Event: &store.Event{Type: "exit", Payload: map[string]any{"pid": pid, "exit": code}},
			})
			return
		}
		b.mu.Lock()
		if b.gen == gen {
			b.load(rec)
		}
		b.mu.Unlock()
		b.eventsRecorded()
	}()
}

// recordLater keeps trying to record a change the runtime has made but
// Postgres did not take (it was unreachable), until it is recorded, a
// newer change to the bot supersedes it, or the controller closes.
func (c *Controller) recordLater(b *bot, gen uint64, ch store.StateChange) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for wait := 500 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
			select {
			case <-c.life.Done():
				return
			case <-time.After(wait):
			}
			ctx, cancel := context.WithTimeout(c.life, time.Minute)
			err := b.lock(ctx)
			if err != nil {
				cancel()
				continue
			}
			b.mu.Lock()
			current := b.gen == gen
			b.mu.Unlock()
			if !current {
				b.unlock()
				cancel()
				return // a later change was recorded (or will be) instead
			}
			rec, err := c.st.SetState(ctx, b.id(), ch)
			if err == nil {
				b.mu.Lock()
				b.load(rec)
				b.mu.Unlock()
				b.eventsRecorded()
				c.log.Info("recorded a change Postgres missed", "bot", b.name, "state", ch.State)
			}
			b.unlock()
			cancel()
			if err == nil || store.IsNotFound(err) {
				return
			}
		}
	}()
}

// exitedDuringOp records, under the operation lock, that the task ended
// while an operation had the bot.
func (c *Controller) exitedDuringOp(ctx context.Context, b *bot, ti runtime.TaskInfo) {
	code := int(ti.ExitCode)
	if _, err := c.rt.Stop(ctx, b.name, 0); err != nil && !errdefs.IsNotFound(err) {
		c.log.Warn("clean up after an exited task", "bot", b.name, "err", err)
	}
	b.mu.Lock()
	pid := b.pid
	b.state, b.pid, b.ip, b.exit = store.StateStopped, 0, "", &code
	b.gen++
	b.mu.Unlock()
	rec, err := c.st.SetState(ctx, b.id(), store.StateChange{
		State: store.StateStopped, ExitCode: &code, Stopped: true,
		Event: &store.Event{Type: "exit", Payload: map[string]any{"pid": pid, "exit": code}},
	})
	if err == nil {
		b.apply(rec)
		b.eventsRecorded()
	}
}
