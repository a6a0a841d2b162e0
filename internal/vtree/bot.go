package vtree

import (
	"context"
	"syscall"
	"time"

	"github.com/memohfs/memohfs/control"
)

// Bot is /M/<bot>: mode 0700 for the bot's owner, with fixed entries
// (Entries). data/ and skills/ are Trees over the bot's data dir (the
// same files: skills/ is data/.skills).
type Bot struct {
	r     *Root
	Name  string
	ID    string
	Owner uint32

	entries map[string]Node
}

// Entries are a bot dir's names, in listing order.
var Entries = []string{"ctl", "status", "err", "events", "log", "data", "skills", "snapshots", "cmd"}

func newBot(r *Root, st control.Status) *Bot {
	b := &Bot{r: r, Name: st.Name, ID: st.ID, Owner: st.Owner}
	c, name := r.c, st.Name
	dataDir := func(context.Context) (string, error) { return c.DataDir(name), nil }
	b.entries = map[string]Node{
		"ctl": &CtlFile{b: b},
		"status": &TextFile{Owner: b.Owner,
			Mtime: func(ctx context.Context) time.Time { return b.times(ctx).StateChanged },
			Render: func(context.Context) ([]byte, error) {
				st, err := c.Status(name)
				// How data/ is served here: the kernel (a bind) or FUSE.
				return []byte(st.String() + "data-path " + r.dataPath(name) + "\n"), err
			}},
		"err": &TextFile{Owner: b.Owner,
			Mtime: func(ctx context.Context) time.Time { return b.times(ctx).ErrChanged },
			Render: func(context.Context) ([]byte, error) {
				msg, err := c.LastError(name)
				if msg != "" {
					msg += "\n"
				}
				return []byte(msg), err
			}},
		"events":    &EventsFile{b: b},
		"log":       &LogFile{b: b},
		"data":      &Tree{Resolve: dataDir, Owner: b.Owner},
		"skills":    &Tree{Resolve: dataDir, Prefix: ".skills", MakePrefix: true, Owner: b.Owner},
		"snapshots": &SnapshotsDir{b: b},
		"cmd":       &CmdDir{b: b},
	}
	return b
}

func (r *Root) dataPath(bot string) string {
	if r.DataPath == nil {
		return "fuse"
	}
	return r.DataPath(bot)
}

// times says when the bot's files last changed (control.Times).
func (b *Bot) times(ctx context.Context) control.Times {
	t, _ := b.r.c.Times(ctx, b.Name)
	return t
}

// Root is the tree the bot is in.
func (b *Bot) Root() *Root { return b.r }

// Attr: the bot's dirs are data, skills, snapshots and cmd; its times are
// when it was made. A bot deleted since is ENOENT.
func (b *Bot) Attr(ctx context.Context) (Attr, error) {
	st, err := b.r.c.Status(b.Name)
	if err != nil {
		return Attr{}, err
	}
	a := dirAttr(0o700, b.Owner, 4, st.Created)
	a.Ino = StableIno("bot", b.ID)
	return a, nil
}

func (b *Bot) Lookup(ctx context.Context, name string) (Node, error) {
	if n, ok := b.entries[name]; ok {
		return n, nil
	}
	return nil, syscall.ENOENT
}

func (b *Bot) List(ctx context.Context) ([]Entry, error) {
	out := make([]Entry, 0, len(Entries))
	for _, name := range Entries {
		mode := uint32(syscall.S_IFREG)
		switch b.entries[name].(type) {
		case Dir, *Tree:
			mode = syscall.S_IFDIR
		}
		out = append(out, Entry{Name: name, Mode: mode})
	}
	return out, nil
}

// Tree is a host directory served as a subtree: data/, skills/, and a
// snapshot's data/ and rootfs/. Each face walks it with its own fds and
// the shared calls of internal/hostfs; a Tree only says where it is.
type Tree struct {
	// Resolve gives the trusted base directory (made by memohfs or the
	// runtime); it may be slow (a snapshot view is mounted on first use).
	Resolve func(ctx context.Context) (string, error)
	// Prefix is a path inside the base where the tree starts (".skills");
	// it is walked like any other path, so it may not be a symlink.
	Prefix string
	// MakePrefix makes Prefix (0755) when it is missing: skills/ exists
	// before the first skill.
	MakePrefix bool
	ReadOnly   bool
	Owner      uint32
}

// Attr of a Tree is its host dir's: each face stats it through its fds.
func (t *Tree) Attr(ctx context.Context) (Attr, error) {
	return Attr{}, syscall.ENOSYS
}
