package control

import (
	"context"
	"errors"
	"time"

	"github.com/memohfs/memohfs/store"
)

// Times are the moments `ls -l /M/<bot>` shows:
//
//	$ ls -l --time-style=+%T /M/b1
//	-rw------- 1 root root  212 10:00:00 ctl      (Created)
//	-r--r--r-- 1 root root    0 10:04:12 err      (ErrChanged)
//	-r--r--r-- 1 root root    0 10:04:12 events   (LastEvent)
//	-r--r--r-- 1 root root  301 10:04:11 status   (StateChanged)
type Times struct {
	Created      time.Time // the bot was made: ctl, the bot dir
	StateChanged time.Time // its state last changed: status
	LastEvent    time.Time // its last event was recorded: events
	ErrChanged   time.Time // err last changed (a failure, or a success clearing one): err
}

// Times says when the bot's files last changed. A moment memohfs has not
// seen since it started is taken from the record (the container record's
// last update for the state and err; the newest event, read once, for
// events); one it cannot know is the bot's creation. No error but an
// unknown bot.
func (c *Controller) Times(ctx context.Context, name string) (Times, error) {
	b, err := c.get(name)
	if err != nil {
		return Times{}, err
	}
	b.mu.Lock()
	t := Times{Created: b.rec.Created, StateChanged: b.changed, LastEvent: b.eventAt, ErrChanged: b.errChanged}
	id := b.rec.ID
	b.mu.Unlock()
	if t.LastEvent.IsZero() {
		e, err := c.st.LastEvent(ctx, id)
		var none *store.NotFoundError
		if errors.As(err, &none) {
			e.Time, err = t.Created, nil // no event yet
		}
		if err == nil { // else: asked again next time
			b.mu.Lock()
			if b.eventAt.IsZero() {
				b.eventAt = e.Time
			}
			t.LastEvent = b.eventAt
			b.mu.Unlock()
		}
	}
	for _, m := range []*time.Time{&t.StateChanged, &t.LastEvent, &t.ErrChanged} {
		if m.IsZero() {
			*m = t.Created
		}
	}
	return t, nil
}

// recordTime is when the record was last written.
func recordTime(rec store.Bot) time.Time {
	if !rec.Container.Updated.IsZero() {
		return rec.Container.Updated
	}
	return rec.Created
}
