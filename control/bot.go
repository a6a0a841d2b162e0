package control

import (
	"context"
	"sync"
	"time"

	"github.com/memohfs/memohfs/store"
)

// bot is the live state of one bot. Operations on it take op (one at a
// time: a second ctl write waits); mu guards the fields, briefly.
type bot struct {
	name string
	op   chan struct{} // holds one token: taken while an operation runs

	mu      sync.Mutex
	rec     store.Bot // the record as last written
	state   store.State
	pid     int
	ip      string
	exit    *int
	started *time.Time
	stopped *time.Time
	lastErr string
	// When status, err and events last changed (Times); zero: not known
	// yet.
	changed, errChanged, eventAt time.Time
	gen                          uint64        // bumped by every state change an operation makes
	evNotify                     chan struct{} // closed (and replaced) when an event is recorded
	gone                         bool          // deleted
	cmds                         *conns        // its cmd/ connections, made when first used
}

func newBot(rec store.Bot) *bot {
	b := &bot{name: rec.Name, op: make(chan struct{}, 1), evNotify: make(chan struct{})}
	b.op <- struct{}{}
	b.load(rec)
	return b
}

// load takes state from a record.
func (b *bot) load(rec store.Bot) {
	b.rec = rec
	c := rec.Container
	if b.changed.IsZero() || c.State != b.state {
		b.changed = recordTime(rec)
	}
	b.state = c.State
	b.pid, b.ip, b.exit = c.Pid, c.IP, c.ExitCode
	b.started, b.stopped = c.Started, c.Stopped
	if c.Error != "" && b.lastErr == "" {
		b.lastErr = c.Error
		b.errChanged = recordTime(rec)
	}
}

// lock takes the operation lock, waiting for the one in progress; the
// wait ends if ctx does.
func (b *bot) lock(ctx context.Context) error {
	select {
	case <-b.op:
		b.mu.Lock()
		gone := b.gone
		b.mu.Unlock()
		if gone {
			b.op <- struct{}{}
			return errorf(KindNotFound, "bot %q: no such bot", b.name)
		}
		return nil
	case <-ctx.Done():
		return wrap(ctx.Err(), "waiting for the operation in progress on bot "+b.name)
	}
}

func (b *bot) unlock() { b.op <- struct{}{} }

func (b *bot) setState(s store.State) {
	b.mu.Lock()
	if s != b.state {
		b.changed = time.Now()
	}
	b.state = s
	b.gen++
	b.mu.Unlock()
}

func (b *bot) getState() store.State {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state
}

func (b *bot) id() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.rec.ID
}

func (b *bot) setErr(msg string) {
	b.mu.Lock()
	if msg != b.lastErr {
		b.errChanged = time.Now()
	}
	b.lastErr = msg
	b.mu.Unlock()
}

// eventsRecorded wakes readers waiting for the bot's next event.
func (b *bot) eventsRecorded() {
	b.mu.Lock()
	b.eventAt = time.Now()
	close(b.evNotify)
	b.evNotify = make(chan struct{})
	b.mu.Unlock()
}

func (b *bot) eventWait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.evNotify
}
