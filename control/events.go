package control

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Event is one lifecycle event of a bot.
type Event struct {
	ID     int64
	Time   time.Time
	Type   string
	Detail map[string]any
}

// String renders an event line: `<RFC3339 time> <type> <detail>`, the
// detail as sorted key=value words (values with blanks quoted).
func (e Event) String() string {
	keys := make([]string, 0, len(e.Detail))
	for k := range e.Detail {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := []string{e.Time.UTC().Format(time.RFC3339Nano), e.Type}
	for _, k := range keys {
		v := fmt.Sprint(e.Detail[k])
		if v == "" || strings.ContainsAny(v, " \t\n\"") {
			v = fmt.Sprintf("%q", v)
		}
		parts = append(parts, k+"="+v)
	}
	if len(keys) == 0 {
		parts = append(parts, "-")
	}
	return strings.Join(parts, " ") + "\n"
}

// Events returns the bot's events after id `after`, waiting for the next
// one if there are none yet and wait is set. The wait ends with ctx, or
// with the bot (NotFound).
func (c *Controller) Events(ctx context.Context, name string, after int64, wait bool) ([]Event, error) {
	b, err := c.get(name)
	if err != nil {
		return nil, err
	}
	for {
		ch := b.eventWait()
		b.mu.Lock()
		gone := b.gone
		b.mu.Unlock()
		if gone {
			return nil, errorf(KindNotFound, "bot %q: deleted", name)
		}
		recs, err := c.st.ListEvents(ctx, b.id(), after, 1000)
		if err != nil {
			return nil, wrap(err, "events of bot "+name)
		}
		if len(recs) > 0 || !wait {
			out := make([]Event, len(recs))
			for i, r := range recs {
				out[i] = Event{ID: r.ID, Time: r.Time, Type: r.Type, Detail: r.Payload}
			}
			return out, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, wrap(ctx.Err(), "waiting for events of bot "+name)
		}
	}
}
