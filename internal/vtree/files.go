package vtree

import (
	"context"
	"sync"
	"syscall"
	"time"

	"github.com/memohfs/memohfs/control"
)

// The files of a bot dir, and a snapshot's info: each a File with its
// Handle. Every face serves them as they are.

// CtlFile is <bot>/ctl. A write runs its verbs (one per line) and returns
// when they are done, or fails with the errno of the first that failed;
// the reason is then in err. Reading gives the verb list.
type CtlFile struct{ b *Bot }

// Attr: the size is that of what a read gives (the verb list); the time
// is the bot's making.
func (f *CtlFile) Attr(ctx context.Context) (Attr, error) {
	return fileAttr(0o600, f.b.Owner, len(control.Help()), f.b.times(ctx).Created), nil
}

func (f *CtlFile) Open(ctx context.Context, flags int) (Handle, error) {
	return &ctlHandle{f: f}, nil
}

type ctlHandle struct{ f *CtlFile }

func (h *ctlHandle) Read(ctx context.Context, p []byte, off int64) (int, error) {
	return ReadAt([]byte(control.Help()), p, off), nil
}

func (h *ctlHandle) Write(ctx context.Context, p []byte, off int64) (int, error) {
	if err := h.f.b.r.c.Ctl(ctx, h.f.b.Name, string(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (h *ctlHandle) Close() error { return nil }
func (h *ctlHandle) Kind() Kind   { return Seekable }

// TextFile is a small read-only file (status, err, info): its content is
// rendered at open and again at a read from offset 0 (as sysfs rearms),
// and its size is honest. Mtime, if set, says when the content last
// changed.
type TextFile struct {
	Owner  uint32
	Render func(ctx context.Context) ([]byte, error)
	Mtime  func(ctx context.Context) time.Time
}

func (f *TextFile) Attr(ctx context.Context) (Attr, error) {
	b, err := f.Render(ctx)
	if err != nil {
		return Attr{}, err
	}
	var t time.Time
	if f.Mtime != nil {
		t = f.Mtime(ctx)
	}
	return fileAttr(0o444, f.Owner, len(b), t), nil
}

func (f *TextFile) Open(ctx context.Context, flags int) (Handle, error) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return nil, syscall.EACCES
	}
	b, err := f.Render(ctx)
	if err != nil {
		return nil, err
	}
	return &textHandle{f: f, content: b}, nil
}

type textHandle struct {
	readOnly
	f       *TextFile
	mu      sync.Mutex
	content []byte
}

func (h *textHandle) Read(ctx context.Context, p []byte, off int64) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if off == 0 {
		b, err := h.f.Render(ctx)
		if err != nil {
			return 0, err
		}
		h.content = b
	}
	return ReadAt(h.content, p, off), nil
}

func (h *textHandle) Close() error { return nil }
func (h *textHandle) Kind() Kind   { return Seekable }

// EventsFile is <bot>/events: one line per lifecycle event. A read from
// the start returns the history; a reader at the end waits for the next
// event, so `cat events` follows like `tail -f` (a reader that opened
// with O_NONBLOCK gets end-of-file instead). The wait ends with the
// request (an interrupt, a 9P flush) or with the face (Root.Life).
type EventsFile struct{ b *Bot }

// Attr: the mtime is the last event's; the size is 0, as /proc's files
// have (the history is in Postgres, and a read gives it).
func (f *EventsFile) Attr(ctx context.Context) (Attr, error) {
	return fileAttr(0o444, f.b.Owner, 0, f.b.times(ctx).LastEvent), nil
}

func (f *EventsFile) Open(ctx context.Context, flags int) (Handle, error) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return nil, syscall.EACCES
	}
	return &eventsHandle{f: f, nonblock: flags&syscall.O_NONBLOCK != 0}, nil
}

type eventsHandle struct {
	readOnly
	f        *EventsFile
	mu       sync.Mutex
	buf      []byte
	last     int64
	nonblock bool
	loaded   bool
}

// Read serves the history by offset (a reader may seek back), and waits
// at its end for what comes next.
func (h *eventsHandle) Read(ctx context.Context, p []byte, off int64) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.f.b.r
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(r.Life, cancel)()
	for off >= int64(len(h.buf)) {
		wait := h.loaded && !h.nonblock
		evs, err := r.c.Events(ctx, h.f.b.Name, h.last, wait)
		if err != nil {
			if control.KindOf(err) == control.KindNotFound || r.Life.Err() != nil {
				return 0, nil // the bot or the face is gone: end of file
			}
			return 0, err
		}
		h.loaded = true
		for _, e := range evs {
			h.buf = append(h.buf, e.String()...)
			h.last = e.ID
		}
		if len(evs) == 0 && !wait {
			if h.nonblock || off < int64(len(h.buf)) {
				break
			}
		}
	}
	return ReadAt(h.buf, p, off), nil
}

func (h *eventsHandle) Close() error { return nil }

// Kind: events is read by offset (its history can be read again), but
// blocks at its end like a stream.
func (h *eventsHandle) Kind() Kind { return Seekable }
