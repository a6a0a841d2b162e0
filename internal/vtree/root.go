package vtree

import (
	"context"
	"syscall"
	"time"

	"github.com/memohfs/memohfs/control"
)

// Root is /M: a dir per bot, 1777 like /tmp (anyone may make a bot; a
// bot dir is its owner's). mkdir makes a bot, rmdir deletes one.
//
//	$ mkdir /M/b1 && ls /M
//	b1
type Root struct {
	c *control.Controller
	// Life ends when the face stops: it wakes readers waiting on events.
	Life context.Context
	// DataPath says how a bot's data/ is served now ("bind" or "fuse"),
	// for status; nil: "fuse".
	DataPath func(bot string) string
	// Mtime is /M's mtime; nil: when the Root was made.
	Mtime func() time.Time
	made  time.Time
}

// NewRoot describes the controller's bots; life ends with the face.
func NewRoot(c *control.Controller, life context.Context) *Root {
	return &Root{c: c, Life: life, made: time.Now()}
}

// Controller is the controller the tree calls.
func (r *Root) Controller() *control.Controller { return r.c }

func (r *Root) Attr(ctx context.Context) (Attr, error) {
	t := r.made
	if r.Mtime != nil {
		t = r.Mtime()
	}
	a := dirAttr(0o1777, 0, r.c.BotCount(), t)
	a.Ino = StableIno("root")
	return a, nil
}

// Lookup gives the bot called name.
func (r *Root) Lookup(ctx context.Context, name string) (Node, error) {
	return r.Bot(name)
}

// Bot describes the bot called name as it is now.
func (r *Root) Bot(name string) (*Bot, error) {
	if err := TooLong(name); err != nil {
		return nil, err
	}
	st, err := r.c.Status(name)
	if err != nil {
		return nil, err
	}
	return newBot(r, st), nil
}

func (r *Root) List(ctx context.Context) ([]Entry, error) {
	bots := r.c.Bots()
	out := make([]Entry, 0, len(bots))
	for _, b := range bots {
		st, err := r.c.Status(b.Name)
		if err != nil {
			continue // deleted since
		}
		out = append(out, Entry{Name: b.Name, Mode: syscall.S_IFDIR, Ino: StableIno("bot", st.ID)})
	}
	return out, nil
}

// Mkdir makes a bot owned by the caller.
func (r *Root) Mkdir(ctx context.Context, name string) error {
	if err := TooLong(name); err != nil {
		return err
	}
	c, _ := CallerOf(ctx)
	return r.c.Create(ctx, name, c.Uid)
}

// Rmdir deletes a bot (its data goes to the trash).
func (r *Root) Rmdir(ctx context.Context, name string) error {
	return r.c.Delete(ctx, name)
}
