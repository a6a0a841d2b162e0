package runtime

import (
	"context"
	"fmt"
	"strconv"

	apievents "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
)

// Events streams task events of the bots' init processes in this
// namespace. Exec processes and foreign containers are filtered out.
func (c *Containerd) Events(ctx context.Context) (<-chan Event, <-chan error) {
	out := make(chan Event, 64)
	errc := make(chan error, 1)
	filter := `namespace==` + strconv.Quote(c.cfg.Namespace) + `,topic~="^/tasks/"`
	envs, errs := c.client.EventService().Subscribe(ctx, filter)
	go func() {
		defer close(out)
		for {
			select {
			case env, ok := <-envs:
				if !ok {
					errc <- fmt.Errorf("event stream closed: %w", errdefs.ErrUnavailable)
					return
				}
				ev, ok := decodeEvent(env)
				if !ok {
					continue
				}
				select {
				case out <- ev:
				case <-ctx.Done():
					errc <- nil
					return
				}
			case err := <-errs:
				if ctx.Err() != nil {
					errc <- nil
				} else {
					err = fmt.Errorf("event stream: %w", err)
					native(&err)
					errc <- err
				}
				return
			case <-ctx.Done():
				errc <- nil
				return
			}
		}
	}()
	return out, errc
}

func decodeEvent(env *events.Envelope) (Event, bool) {
	if env == nil || env.Event == nil {
		return Event{}, false
	}
	v, err := typeurl.UnmarshalAny(env.Event)
	if err != nil {
		return Event{}, false
	}
	ev := Event{Time: env.Timestamp}
	switch e := v.(type) {
	case *apievents.TaskStart:
		ev.Type, ev.ContainerID, ev.Pid = EventStart, e.ContainerID, e.Pid
	case *apievents.TaskExit:
		if e.ID != e.ContainerID {
			return Event{}, false // an exec process
		}
		ev.Type, ev.ContainerID, ev.Pid, ev.ExitCode = EventExit, e.ContainerID, e.Pid, e.ExitStatus
		if e.ExitedAt != nil {
			ev.Time = e.ExitedAt.AsTime()
		}
	case *apievents.TaskOOM:
		ev.Type, ev.ContainerID = EventOOM, e.ContainerID
	case *apievents.TaskPaused:
		ev.Type, ev.ContainerID = EventPaused, e.ContainerID
	case *apievents.TaskResumed:
		ev.Type, ev.ContainerID = EventResume, e.ContainerID
	case *apievents.TaskDelete:
		if e.ID != "" && e.ID != e.ContainerID {
			return Event{}, false
		}
		ev.Type, ev.ContainerID, ev.Pid, ev.ExitCode = EventDelete, e.ContainerID, e.Pid, e.ExitStatus
	default:
		return Event{}, false
	}
	ev.Bot = BotOf(ev.ContainerID)
	if ev.Bot == "" {
		return Event{}, false
	}
	return ev, true
}
