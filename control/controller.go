package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/memohfs/memohfs/runtime"
	"github.com/memohfs/memohfs/store"
)

// Options configure a Controller.
type Options struct {
	// DataRoot holds bots' host data dirs (bots/<bot>), the data side of
	// snapshots (snapshots/<bot>/<name>) and what deleted bots leave
	// (trash/<bot>-<time>). Required, absolute.
	DataRoot string
	// StopGrace is how long stop waits after SIGTERM; 10s when zero.
	StopGrace time.Duration
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
}

// ChangeKind says what changed, for the filesystem's caches.
type ChangeKind int

const (
	BotAdded ChangeKind = iota
	BotRemoved
	DataReplaced     // the bot's data dir is a new directory (restore)
	SnapshotsChanged // a snapshot was taken or dropped
)

// Change is one notification to watchers.
type Change struct {
	Kind ChangeKind
	Bot  string
}

// Controller is the one place bot state changes.
type Controller struct {
	rt   runtime.Runtime
	st   *store.Store
	opts Options
	log  *slog.Logger

	mu       sync.RWMutex
	bots     map[string]*bot
	pending  map[string]bool // names being created
	watchers []func(Change)

	life   context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New loads the bots from Postgres, reads each one's task once, and starts
// following runtime events.
func New(ctx context.Context, rt runtime.Runtime, st *store.Store, opts Options) (*Controller, error) {
	if !filepath.IsAbs(opts.DataRoot) {
		return nil, errorf(KindInvalid, "data root %q must be an absolute path", opts.DataRoot)
	}
	if opts.StopGrace == 0 {
		opts.StopGrace = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	// Root's only, also when made by an older version: what bots write
	// (setuid files, device nodes, links to anywhere) must be reachable
	// only through the mount, never by host users at its host path.
	for _, d := range []string{"bots", "snapshots", "trash"} {
		p := filepath.Join(opts.DataRoot, d)
		if err := os.MkdirAll(p, 0o700); err != nil {
			return nil, wrap(err, "data root")
		}
		if err := os.Chmod(p, 0o700); err != nil {
			return nil, wrap(err, "data root")
		}
	}
	c := &Controller{rt: rt, st: st, opts: opts, log: opts.Logger, bots: map[string]*bot{}, pending: map[string]bool{}}
	recs, err := st.ListBots(ctx)
	if err != nil {
		return nil, wrap(err, "load bots")
	}
	for _, rec := range recs {
		b := newBot(rec)
		c.bots[rec.Name] = b
		// Live pid and address of what runs; what does not run although
		// recorded as running is Reconcile's to settle (it may restart it).
		if ti, err := rt.Task(ctx, rec.Name); err == nil && (ti.State == runtime.TaskRunning || ti.State == runtime.TaskPaused) {
			b.setLive(StateRunning, int(ti.Pid), ti.IP)
		}
	}
	lctx, cancel := context.WithCancel(context.Background())
	c.life, c.cancel = lctx, cancel
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.followRuntime(lctx)
	}()
	return c, nil
}

// Close stops following runtime events. Bots keep running.
func (c *Controller) Close() {
	c.cancel()
	c.wg.Wait()
}

// Watch registers fn to hear about changes. fn must not block.
func (c *Controller) Watch(fn func(Change)) {
	c.mu.Lock()
	c.watchers = append(c.watchers, fn)
	c.mu.Unlock()
}

func (c *Controller) notify(k ChangeKind, botName string) {
	c.mu.RLock()
	ws := c.watchers
	c.mu.RUnlock()
	for _, w := range ws {
		w(Change{Kind: k, Bot: botName})
	}
}

func (c *Controller) get(name string) (*bot, error) {
	c.mu.RLock()
	b := c.bots[name]
	c.mu.RUnlock()
	if b == nil {
		return nil, errorf(KindNotFound, "bot %q: no such bot", name)
	}
	return b, nil
}

// Bot names and owners, for listing. No round trip.
type BotEntry struct {
	Name  string
	Owner uint32
}

// Bots lists the bots, sorted by name.
func (c *Controller) Bots() []BotEntry {
	c.mu.RLock()
	out := make([]BotEntry, 0, len(c.bots))
	for _, b := range c.bots {
		b.mu.Lock()
		out = append(out, BotEntry{Name: b.name, Owner: uint32(b.rec.OwnerUID)})
		b.mu.Unlock()
	}
	c.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Status is the bot's live state, from memory.
func (c *Controller) Status(name string) (Status, error) {
	b, err := c.get(name)
	if err != nil {
		return Status{}, err
	}
	return b.status(), nil
}

// LastError is why the bot's last ctl write failed; empty after a success.
func (c *Controller) LastError(name string) (string, error) {
	b, err := c.get(name)
	if err != nil {
		return "", err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lastErr, nil
}

// DataDir is the bot's host data dir.
func (c *Controller) DataDir(name string) string {
	return filepath.Join(c.opts.DataRoot, "bots", name)
}

// SkillsDir is where the bot's skills live: data/.skills.
func (c *Controller) SkillsDir(name string) string { return filepath.Join(c.DataDir(name), ".skills") }

func (c *Controller) snapshotDir(bot, snap string) string {
	return filepath.Join(c.opts.DataRoot, "snapshots", bot, snap)
}

// LogPath is the host file with the bot's stdout and stderr.
func (c *Controller) LogPath(name string) string { return c.rt.LogPath(name) }

// Create makes a bot for owner: its record, its host data dir (with
// .skills) and its container, not started.
func (c *Controller) Create(ctx context.Context, name string, owner uint32) error {
	if !runtime.ValidBotName(name) {
		return errorf(KindInvalid, "bot name %q: want 1 to 63 of a-z 0-9 _ -, starting with a letter or digit", truncate(name, 80))
	}
	c.mu.Lock()
	if c.bots[name] != nil || c.pending[name] {
		c.mu.Unlock()
		return errorf(KindExists, "bot %q exists", name)
	}
	c.pending[name] = true
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, name)
		c.mu.Unlock()
	}()
	ctx = context.WithoutCancel(ctx) // runs to its end (see Ctl)

	if err := c.reachable(ctx); err != nil {
		return err
	}
	dataDir := c.DataDir(name)
	_, existed := os.Lstat(dataDir)
	if err := makeDataDir(dataDir, owner); err != nil {
		return wrap(err, "bot "+name+": data dir")
	}
	image, snapshotter := c.rt.Defaults()
	rec, err := c.st.CreateBot(ctx, store.NewBot{
		Name: name, OwnerUID: int64(owner), ContainerID: runtime.ContainerID(name),
		Image: image, Snapshotter: snapshotter, DataPath: dataDir,
	})
	if err != nil {
		if existed != nil {
			// Ours and still empty: nothing is left of the attempt.
			os.Remove(filepath.Join(dataDir, ".skills"))
			os.Remove(dataDir)
		}
		return wrap(err, "bot "+name+": record")
	}
	info, err := c.rt.Create(ctx, runtime.BotSpec{Bot: name, DataDir: dataDir})
	if errdefs.IsAlreadyExists(err) {
		// A container of this name without a record: an earlier create
		// that died between its steps. Adopt it if it is ours.
		info, err = c.rt.Container(ctx, name)
		if err == nil && info.DataDir != dataDir {
			err = errorf(KindExists, "a container %s exists for another data dir (%s)", info.ID, info.DataDir)
		}
	}
	if err == nil {
		err = c.st.SetRootfs(ctx, rec.ID, info.RootfsKey, nil)
	}
	if err != nil {
		if derr := c.st.DeleteBot(context.WithoutCancel(ctx), rec.ID); derr != nil {
			c.log.Warn("undo bot record after a failed create", "bot", name, "err", derr)
		}
		return wrap(err, "bot "+name+": container")
	}
	rec.Container.RootfsKey = info.RootfsKey
	b := newBot(rec)
	c.mu.Lock()
	c.bots[name] = b
	c.mu.Unlock()
	c.notify(BotAdded, name)
	return nil
}

// makeDataDir creates the bot's data dir and its .skills, owned by owner.
// A dir that exists (a create that failed half way) is kept as it is.
func makeDataDir(dir string, owner uint32) error {
	for _, d := range []string{dir, filepath.Join(dir, ".skills")} {
		err := os.Mkdir(d, 0o755)
		if errors.Is(err, os.ErrExist) {
			fi, lerr := os.Lstat(d)
			if lerr != nil || !fi.IsDir() {
				return fmt.Errorf("%s exists and is not a directory", d)
			}
			continue
		}
		if err != nil {
			return err
		}
		if err := os.Lchown(d, int(owner), -1); err != nil {
			return err
		}
	}
	return nil
}

// Delete removes a stopped bot: its container, snapshots and records. Its
// data dir and the data of its snapshots are moved under trash/, never
// deleted.
func (c *Controller) Delete(ctx context.Context, name string) error {
	b, err := c.get(name)
	if err != nil {
		return err
	}
	if err := b.lock(ctx); err != nil {
		return err
	}
	defer b.unlock()
	// Once begun, an operation runs to its end: an interrupt of the
	// caller (any signal, even Go's preemption SIGURG, makes the kernel
	// send FUSE_INTERRUPT) must not cut a CNI plugin or a snapshot off
	// half way. Only the wait for the lock above is interruptible.
	ctx = context.WithoutCancel(ctx)
	switch st := b.getState(); st {
	case StateRunning, StateStarting, StateStopping, StateSnapshotting, StateRestoring:
		err := errorf(KindBusy, "rmdir: bot %q is %s: stop it first", name, st)
		b.setErr(err.Error())
		return err
	}
	if err := c.reachable(ctx); err != nil {
		b.setErr(err.Error())
		return err
	}
	id := b.id()
	// The intent goes first: a crash from here on leaves a record that
	// reconcile finishes deleting rather than resurrects.
	if _, err := c.st.AddEvent(ctx, id, store.Event{Type: "delete"}); err != nil {
		return wrap(err, "delete bot "+name)
	}
	if err := c.rt.Delete(ctx, name); err != nil && !errdefs.IsNotFound(err) {
		return wrap(err, "delete bot "+name)
	}
	if err := c.st.DeleteBot(ctx, id); err != nil && !store.IsNotFound(err) {
		b.setState(StateError)
		return wrap(err, "delete bot "+name+": its container is gone but the record stays; rmdir again")
	}
	trash, terr := c.moveToTrash(name)
	b.mu.Lock()
	b.gone = true
	b.mu.Unlock()
	c.mu.Lock()
	delete(c.bots, name)
	c.mu.Unlock()
	b.eventsRecorded() // wake event readers: the bot is gone
	c.notify(BotRemoved, name)
	if terr != nil {
		c.log.Error("move data of a deleted bot aside", "bot", name, "err", terr)
		return wrap(terr, "bot "+name+" deleted, but its data could not be moved to "+trash)
	}
	c.log.Info("bot deleted", "bot", name, "data", trash)
	return nil
}

// moveToTrash moves the bot's data dir and snapshot data to
// trash/<bot>-<time>/{data,snapshots} (and staged restores beside them).
func (c *Controller) moveToTrash(name string) (string, error) {
	dst := filepath.Join(c.opts.DataRoot, "trash", name+"-"+time.Now().UTC().Format("20060102T150405.000000000Z"))
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return dst, err
	}
	var errs []error
	moves := map[string]string{
		c.DataDir(name): filepath.Join(dst, "data"),
		filepath.Join(c.opts.DataRoot, "snapshots", name): filepath.Join(dst, "snapshots"),
	}
	// A copy a restore staged and a crash left (reconcile moves those
	// of a bot that lives on; a bot finished deleting takes them along).
	for _, dir := range stagedRestores(c.DataDir(name)) {
		moves[dir] = filepath.Join(dst, filepath.Base(dir))
	}
	for src, to := range moves {
		if err := os.Rename(src, to); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return dst, errors.Join(errs...)
}

// reachable refuses work up front while Postgres cannot be reached, so
// a change is not made in the runtime only to find it cannot be recorded.
func (c *Controller) reachable(ctx context.Context) error {
	if err := c.st.Ping(ctx); err != nil {
		return wrap(err, "Postgres cannot be reached, so nothing was done")
	}
	return nil
}

// Ctl runs one ctl write: its verbs in order, stopping at the first
// error. The bot's err file gets the reason (and is cleared by success).
func (c *Controller) Ctl(ctx context.Context, name, text string) error {
	b, err := c.get(name)
	if err != nil {
		return err
	}
	cmds, err := ParseCtl(text)
	if err != nil {
		b.setErr(err.Error())
		return err
	}
	if err := b.lock(ctx); err != nil {
		return err
	}
	defer b.unlock()
	// Once begun, an operation runs to its end: an interrupt of the
	// caller (any signal, even Go's preemption SIGURG, makes the kernel
	// send FUSE_INTERRUPT) must not cut a CNI plugin or a snapshot off
	// half way. Only the wait for the lock above is interruptible.
	ctx = context.WithoutCancel(ctx)
	if err := c.reachable(ctx); err != nil {
		b.setErr(err.Error())
		return err
	}
	for _, cmd := range cmds {
		if err := cmd.v.run(c, ctx, b, cmd.Args); err != nil {
			err = wrap(err, cmd.String())
			b.setErr(err.Error())
			return err
		}
	}
	b.setErr("")
	return nil
}
