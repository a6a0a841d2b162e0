package control

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/memohfs/memohfs/runtime"
	"github.com/memohfs/memohfs/store"
)

// reapCmds ends the commands of the bot an earlier daemon recorded as
// started and never saw end (it died with them running): what is left of
// each one's tree is killed, its process deleted from containerd, and its
// end recorded, as containerd saw it when it still knew, else as lost.
// The connections of this daemon are left alone.
func (c *Controller) reapCmds(ctx context.Context, b *bot, rep *Report) error {
	open, err := c.st.Cmds(ctx, b.id(), true)
	if err != nil {
		return wrap(err, "open commands")
	}
	t := b.connTable()
	var errs []error
	for _, rec := range open {
		t.mu.Lock()
		_, ours := t.byN[rec.N]
		t.mu.Unlock()
		if ours {
			continue
		}
		ex, err := c.rt.EndExec(ctx, b.name, rec.ExecID)
		if err != nil {
			errs = append(errs, wrap(err, fmt.Sprintf("end command %d", rec.N)))
			continue
		}
		end := cmdEnd(ex)
		detail := map[string]any{"n": rec.N, "status": ex.String(), "reaped": true}
		if err := c.st.EndCmd(ctx, b.id(), rec.N, end, detail); err != nil {
			errs = append(errs, wrap(err, fmt.Sprintf("record end of command %d", rec.N)))
			continue
		}
		b.eventsRecorded()
		rep.Reaped = append(rep.Reaped, fmt.Sprintf("%s/cmd/%d (%s)", b.name, rec.N, ex))
	}
	return errors.Join(errs...)
}

// reapLater tries reapCmds again, backing off, until it succeeds or the
// controller closes.
func (c *Controller) reapLater(b *bot) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for wait := 500 * time.Millisecond; ; wait = min(2*wait, 10*time.Second) {
			select {
			case <-c.life.Done():
				return
			case <-time.After(wait):
			}
			ctx, cancel := context.WithTimeout(c.life, time.Minute)
			var rep Report
			err := b.lock(ctx)
			if err == nil {
				err = c.reapCmds(ctx, b, &rep)
				b.unlock()
			}
			cancel()
			if err == nil {
				c.log.Info("reaped commands", "bot", b.name, "reaped", rep.Reaped)
				return
			}
			c.log.Warn("reap commands: trying again", "bot", b.name, "err", err)
		}
	}()
}

// cmdEnd is an exit as the store records it.
func cmdEnd(ex runtime.ExitInfo) store.CmdEnd {
	end := store.CmdEnd{At: ex.At}
	switch {
	case ex.Lost:
		end.State = "lost"
	case ex.Signal != 0:
		end.State, end.Signal = "signal", runtime.SignalName(ex.Signal)
	default:
		end.State, end.Code = "exit", ex.Code
	}
	if end.At.IsZero() {
		end.At = time.Now()
	}
	return end
}
