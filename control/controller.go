package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/memohfs/memohfs/runtime"
	"github.com/memohfs/memohfs/store"
	"github.com/prometheus/client_golang/prometheus"
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
	// CmdLimit is how many cmd/ connections a bot may have at once;
	// DefaultCmdLimit when zero.
	CmdLimit int
	// Metrics, if set, gets the controller's Prometheus metrics (bots by
	// state, operations, snapshots, restores, reconcile, the trash).
	Metrics prometheus.Registerer
	// TrashKeep is how long the trash keeps what deleted bots and
	// reconcile leave; older entries are removed, logged and counted.
	// Zero keeps them for ever.
	TrashKeep time.Duration

	// crashAfter, for tests only, makes Delete stop dead after the named
	// step ("intent", "runtime", "trash", "record"), leaving memory and
	// disk as a process killed there would.
	crashAfter func(step string) bool
}

// ChangeKind says what changed, for the filesystem's caches.
type ChangeKind int

const (
	BotAdded ChangeKind = iota
	BotRemoved
	DataReplaced     // the bot's data dir is a new directory (restore)
	SnapshotsChanged // a snapshot was taken or dropped
	// DataReplacing comes right before restore swaps a new data dir in,
	// from restore's own goroutine (a watcher must act before it
	// returns: drop what shows the old dir); DataReplaced always follows,
	// whether the swap was made or not.
	DataReplacing
	// SnapshotDropping comes right before a snapshot (Change.Snap) is
	// removed, from the drop's own goroutine (a watcher must let go of
	// what shows it first: its views); SnapshotsChanged always follows,
	// whether it was dropped or not.
	SnapshotDropping
)

// Change is one notification to watchers.
type Change struct {
	Kind ChangeKind
	Bot  string
	Snap string // the snapshot, for SnapshotDropping
}

// Controller is the one place bot state changes.
type Controller struct {
	rt   runtime.Runtime
	st   *store.Store
	opts Options
	log  *slog.Logger

	mu      sync.RWMutex
	bots    map[string]*bot
	pending map[string]bool // names being created, or their leftovers moved to the trash
	// Bots whose data is in the trash and whose record is not yet
	// dropped (name -> record id): no longer served, and their names stay
	// taken until the record is gone.
	deleting  map[string]string
	finishing sync.Mutex // one finishDelete at a time
	watchers  []func(Change)

	m *metrics // nil: not counted

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
	if opts.CmdLimit <= 0 {
		opts.CmdLimit = DefaultCmdLimit
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
	c := &Controller{rt: rt, st: st, opts: opts, log: opts.Logger, bots: map[string]*bot{},
		pending: map[string]bool{}, deleting: map[string]string{}}
	recs, err := st.ListBots(ctx)
	if err != nil {
		return nil, wrap(err, "load bots")
	}
	for _, rec := range recs {
		trashed, err := c.dataTrashed(ctx, rec)
		if err != nil {
			return nil, wrap(err, "load bot "+rec.Name)
		}
		if trashed {
			// A delete a crash cut off after the data went: not served,
			// the name kept taken; Reconcile drops the record.
			c.deleting[rec.Name] = rec.ID
			continue
		}
		b := newBot(rec)
		c.bots[rec.Name] = b
		// Live pid and address of what runs; what does not run although
		// recorded as running is Reconcile's to settle (it may restart it).
		if ti, err := rt.Task(ctx, rec.Name); err == nil && (ti.State == runtime.TaskRunning || ti.State == runtime.TaskPaused) {
			b.setLive(store.StateRunning, int(ti.Pid), ti.IP)
		}
	}
	c.m = newMetrics(opts.Metrics, c)
	lctx, cancel := context.WithCancel(context.Background())
	c.life, c.cancel = lctx, cancel
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.followRuntime(lctx)
	}()
	if opts.TrashKeep > 0 {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.sweepTrash(lctx)
		}()
	}
	return c, nil
}

// Close ends the commands run through cmd/ (recorded) and stops
// following runtime events. Bots keep running.
func (c *Controller) Close() {
	// Commands run through the mount end with it, recorded.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	c.mu.RLock()
	bots := make([]*bot, 0, len(c.bots))
	for _, b := range c.bots {
		bots = append(bots, b)
	}
	c.mu.RUnlock()
	for _, b := range bots {
		c.endAllConns(ctx, b)
	}
	cancel()
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
	c.tell(Change{Kind: k, Bot: botName})
}

func (c *Controller) tell(ch Change) {
	c.mu.RLock()
	ws := c.watchers
	c.mu.RUnlock()
	for _, w := range ws {
		w(ch)
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

// BotCount is how many bots there are (len(Bots()) without the list).
func (c *Controller) BotCount() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.bots)
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
func (c *Controller) Create(ctx context.Context, name string, owner uint32) (err error) {
	start := time.Now()
	defer func() { c.m.op("create", err, time.Since(start)) }()
	if !runtime.ValidBotName(name) {
		return errorf(KindInvalid, "bot name %q: want 1 to 63 of a-z 0-9 _ -, starting with a letter or digit", truncate(name, 80))
	}
	c.mu.Lock()
	if c.bots[name] != nil || c.pending[name] || c.deleting[name] != "" {
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
	ctx = context.WithoutCancel(ctx) // runs to its end (see operate)

	if err := c.reachable(ctx); err != nil {
		return err
	}
	dataDir := c.DataDir(name)
	// No record holds this name, so whatever bots/NAME or snapshots/NAME
	// hold is a bot's a crash left (or an earlier create's): never hand it
	// over, move it to the trash and start empty.
	trash, moved, err := c.moveToTrash(name)
	if err != nil {
		return wrap(err, "bot "+name+": move what a bot of this name left to "+trash)
	}
	if len(moved) > 0 {
		c.log.Warn("a bot of this name left data without a record: moved to the trash before making it afresh",
			"bot", name, "moved", moved, "trash", trash)
	}
	if err := makeDataDir(dataDir, owner); err != nil {
		return wrap(err, "bot "+name+": data dir")
	}
	image, snapshotter := c.rt.Defaults()
	rec, err := c.st.CreateBot(ctx, store.NewBot{
		Name: name, OwnerUID: int64(owner), ContainerID: runtime.ContainerID(name),
		Image: image, Snapshotter: snapshotter, DataPath: dataDir,
	})
	if err != nil {
		removeFreshDataDir(dataDir)
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
		} else {
			removeFreshDataDir(dataDir)
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
// Both must be new: a dir that exists is refused, never adopted.
func makeDataDir(dir string, owner uint32) error {
	for _, d := range []string{dir, filepath.Join(dir, ".skills")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
		if err := os.Lchown(d, int(owner), -1); err != nil {
			return err
		}
	}
	return nil
}

// removeFreshDataDir undoes makeDataDir after a create failed: nobody was
// served the dir, so it is empty (anything else in it is left).
func removeFreshDataDir(dir string) {
	os.Remove(filepath.Join(dir, ".skills"))
	os.Remove(dir)
}

// Delete removes a stopped bot: its container, snapshots and records. Its
// data dir and the data of its snapshots are moved under trash/, never
// deleted, and before its record is dropped: while the record lives the
// name is taken, so no one can mkdir it and be handed the data. A crash
// at any step leaves either the bot with its record (Reconcile finishes
// the delete it began) or its data in the trash.
func (c *Controller) Delete(ctx context.Context, name string) error {
	return c.operate(ctx, name, "delete", nil, c.delete)
}

func (c *Controller) delete(ctx context.Context, b *bot) error {
	name := b.name
	switch st := b.getState(); st {
	case store.StateRunning, store.StateStarting, store.StateStopping, store.StateSnapshotting, store.StateRestoring:
		return errorf(KindBusy, "rmdir: bot %q is %s: stop it first", name, st)
	}
	id := b.id()
	// The intent goes first: a crash from here on leaves a record that
	// reconcile finishes deleting rather than resurrects.
	if _, err := c.st.AddEvent(ctx, id, store.Event{Type: "delete"}); err != nil {
		return wrap(err, "delete bot "+name)
	}
	if c.crashed("intent") {
		return errCrashed
	}
	if err := c.rt.Delete(ctx, name); err != nil && !errdefs.IsNotFound(err) {
		return wrap(err, "delete bot "+name)
	}
	if c.crashed("runtime") {
		return errCrashed
	}
	trash, _, terr := c.moveToTrash(name)
	if c.crashed("trash") {
		return errCrashed
	}
	if _, err := os.Lstat(c.DataDir(name)); err == nil || !errors.Is(err, os.ErrNotExist) {
		b.setState(store.StateError)
		return wrap(errors.Join(terr, err), "delete bot "+name+": its container is gone, but its data could not be moved to "+trash+"; rmdir again")
	}
	// The data is gone: the bot is no longer served, and its name stays
	// taken until its record is dropped.
	c.mu.Lock()
	delete(c.bots, name)
	c.deleting[name] = id
	c.mu.Unlock()
	b.mu.Lock()
	b.gone = true
	b.mu.Unlock()
	b.eventsRecorded() // wake event readers: the bot is gone
	c.notify(BotRemoved, name)
	rest, err := c.finishDelete(ctx, name, id)
	if c.crashed("record") {
		return errCrashed
	}
	if err != nil {
		c.log.Error("drop the record of a deleted bot: retrying", "bot", name, "data", trash, "err", errors.Join(terr, err))
		c.finishLater(name, id)
		return wrap(err, "bot "+name+" deleted and its data moved to "+trash+
			", but the rest could not be finished yet (memohfs retries, and reconcile finishes it; the name stays taken until then)")
	}
	if rest != "" {
		trash += " and " + rest
	}
	c.log.Info("bot deleted", "bot", name, "data", trash)
	return nil
}

// errCrashed is what Delete returns where Options.crashAfter stops it.
var errCrashed = errorf(KindInternal, "stopped dead for a test")

func (c *Controller) crashed(step string) bool {
	return c.opts.crashAfter != nil && c.opts.crashAfter(step)
}

// finishDelete finishes a delete whose data dir has gone to the trash:
// what is left of its data goes there too, then the record is dropped and
// the name freed. It returns the trash dir of what it moved, if anything.
func (c *Controller) finishDelete(ctx context.Context, name, id string) (string, error) {
	c.finishing.Lock()
	defer c.finishing.Unlock()
	c.mu.RLock()
	mine := c.deleting[name] == id
	c.mu.RUnlock()
	if !mine {
		return "", nil // finished meanwhile
	}
	trash, moved, err := c.moveToTrash(name)
	if err != nil {
		return trash, err
	}
	if len(moved) == 0 {
		trash = ""
	}
	if err := c.st.DeleteBot(ctx, id); err != nil && !store.IsNotFound(err) {
		return trash, err
	}
	c.mu.Lock()
	delete(c.deleting, name)
	c.mu.Unlock()
	return trash, nil
}

// finishLater keeps trying finishDelete (Postgres was unreachable, say)
// until it succeeds, someone else finished it, or the controller closes.
func (c *Controller) finishLater(name, id string) {
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
			_, err := c.finishDelete(ctx, name, id)
			cancel()
			if err == nil {
				c.log.Info("finished deleting a bot", "bot", name)
				return
			}
		}
	}()
}

// dataTrashed says whether rec is a bot whose delete a crash cut off
// after its data dir went to the trash: its last event is the delete
// intent and its data dir is gone.
func (c *Controller) dataTrashed(ctx context.Context, rec store.Bot) (bool, error) {
	if _, err := os.Lstat(c.DataDir(rec.Name)); !errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	last, err := c.st.LastEvent(ctx, rec.ID)
	if store.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return last.Type == "delete", nil
}

// moveToTrash moves what the data root holds for name (its data dir, the
// data of its snapshots, and restores staged beside the data dir) to
// trash/<name>-<time>/{data,snapshots,...}. It makes no trash dir when
// there is nothing to move, and returns the trash dir and what it moved.
func (c *Controller) moveToTrash(name string) (string, []string, error) {
	dst := filepath.Join(c.opts.DataRoot, "trash", name+"-"+time.Now().UTC().Format("20060102T150405.000000000Z"))
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return dst, nil, fmt.Errorf("%q cannot name a bot's data", name)
	}
	moves := map[string]string{
		c.DataDir(name): filepath.Join(dst, "data"),
		filepath.Join(c.opts.DataRoot, "snapshots", name): filepath.Join(dst, "snapshots"),
	}
	// A copy a restore staged and a crash left (reconcile moves those
	// of a bot that lives on; a bot finished deleting takes them along).
	if runtime.ValidBotName(name) { // no glob metacharacters
		for _, dir := range stagedRestores(c.DataDir(name)) {
			moves[dir] = filepath.Join(dst, filepath.Base(dir))
		}
	}
	var srcs []string
	for src := range moves {
		if _, err := os.Lstat(src); err == nil {
			srcs = append(srcs, src)
		}
	}
	if len(srcs) == 0 {
		return dst, nil, nil
	}
	sort.Strings(srcs)
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return dst, nil, err
	}
	var errs []error
	var moved []string
	for _, src := range srcs {
		if err := os.Rename(src, moves[src]); err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
			continue
		}
		rel, _ := filepath.Rel(c.opts.DataRoot, src)
		moved = append(moved, rel)
	}
	return dst, moved, errors.Join(errs...)
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
// error.
func (c *Controller) Ctl(ctx context.Context, name, text string) error {
	var cmds []Command
	return c.operate(ctx, name, "", func() (err error) {
		cmds, err = ParseCtl(text)
		if err != nil {
			c.m.op("parse", err, 0)
		}
		return err
	}, func(ctx context.Context, b *bot) error {
		for _, cmd := range cmds {
			start := time.Now()
			err := cmd.v.run(c, ctx, b, cmd.Args)
			c.m.op(cmd.v.name, err, time.Since(start))
			if err != nil {
				return wrap(err, cmd.String())
			}
		}
		return nil
	})
}

// operate is the one way into an operation on a bot (a ctl write, rmdir,
// mkdir or rmdir in snapshots/), counted in the metrics as verb (a ctl
// write counts each of its verbs itself): check runs first (bad input fails at
// once, without waiting); then the bot's lock is taken, one operation at
// a time, and run runs with Postgres known reachable. The bot's err file
// gets the reason of any failure of check, the reachability test or run,
// and is cleared by success. The wait for the lock is the only step an
// interrupt ends (its error is the caller's, not the bot's, and leaves
// err alone).
//
// Once begun, an operation runs to its end: an interrupt of the caller
// (any signal, even Go's preemption SIGURG, makes the kernel send
// FUSE_INTERRUPT) must not cut a CNI plugin or a snapshot off half way,
// so run gets a context that is not cancelled.
func (c *Controller) operate(ctx context.Context, name, verb string, check func() error, run func(ctx context.Context, b *bot) error) (err error) {
	if verb != "" {
		start := time.Now()
		defer func() { c.m.op(verb, err, time.Since(start)) }()
	}
	b, err := c.get(name)
	if err != nil {
		return err
	}
	if check != nil {
		if err := check(); err != nil {
			b.setErr(err.Error())
			return err
		}
	}
	if err := b.lock(ctx); err != nil {
		return err
	}
	defer b.unlock()
	ctx = context.WithoutCancel(ctx)
	err = c.reachable(ctx)
	if err == nil {
		err = run(ctx, b)
	}
	if err != nil {
		b.setErr(err.Error())
	} else {
		b.setErr("")
	}
	return err
}
