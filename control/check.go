package control

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/memohfs/memohfs/runtime"
	"github.com/memohfs/memohfs/store"
)

// CheckReport is what Check found: problems (Postgres, the runtime, the
// disk and the live state disagree) and orphans (containers labelled as
// bots with no record: reported by design, never deleted).
type CheckReport struct {
	Bots     int
	Problems []string
	Orphans  []string
	// Trash is what the data root's trash holds (MeasureTrash); nil when
	// not measured.
	Trash *TrashUsage
}

// OK says there was nothing wrong.
func (r CheckReport) OK() bool { return len(r.Problems) == 0 }

func (r CheckReport) String() string {
	s := fmt.Sprintf("%d bots, %d problems, %d orphans", r.Bots, len(r.Problems), len(r.Orphans))
	for _, p := range r.Problems {
		s += "\n  problem: " + p
	}
	for _, o := range r.Orphans {
		s += "\n  orphan: " + o
	}
	if t := r.Trash; t != nil {
		s += fmt.Sprintf("\n  trash: %d entries, %.1f MiB", t.Entries, float64(t.Bytes)/(1<<20))
		if !t.Oldest.IsZero() {
			s += ", the oldest from " + t.Oldest.UTC().Format(time.RFC3339)
		}
	}
	return s
}

// Check compares, changing nothing, what Postgres records with what the
// runtime and the disk hold and with the live state status shows: every
// bot record has its container and data dir, its task runs exactly when
// the record and status say so, every snapshot record has its runtime
// snapshot and data copy and every snapshot its record, no delete is left
// half done, the data root's bots/ and snapshots/ hold nothing for a name
// without a record, and no address lease or network namespace is held by
// a task that is not running. Each bot is checked under its operation
// lock, so operations in flight are waited for, not reported.
func (c *Controller) Check(ctx context.Context) (CheckReport, error) {
	ck := checker{rt: c.rt, st: c.st, dataRoot: c.opts.DataRoot,
		busy: func(name string) bool {
			c.mu.RLock()
			defer c.mu.RUnlock()
			return c.pending[name]
		},
		served: func() []string {
			c.mu.RLock()
			defer c.mu.RUnlock()
			names := make([]string, 0, len(c.bots))
			for n := range c.bots {
				names = append(names, n)
			}
			return names
		},
		live: func(ctx context.Context, name string) (Status, func(), error) {
			c.mu.RLock()
			b := c.bots[name]
			c.mu.RUnlock()
			if b == nil {
				return Status{}, nil, errorf(KindNotFound, "not served")
			}
			if err := b.lock(ctx); err != nil {
				return Status{}, nil, err
			}
			return b.status(), b.unlock, nil
		}}
	return ck.run(ctx)
}

// CheckFrom is Check for a process other than the one serving the bots
// (memohfs check): dataRoot is the serving process's data root, live gives
// a bot's status as the mount shows it, and served the bots the mount
// lists. It takes no locks: run it while no operation is in flight.
func CheckFrom(ctx context.Context, rt runtime.Runtime, st *store.Store, dataRoot string, served func() []string,
	live func(ctx context.Context, name string) (Status, error)) (CheckReport, error) {
	ck := checker{rt: rt, st: st, dataRoot: dataRoot, served: served,
		live: func(ctx context.Context, name string) (Status, func(), error) {
			s, err := live(ctx, name)
			return s, func() {}, err
		}}
	return ck.run(ctx)
}

// CheckOutside is CheckFrom as memohfs check runs it, from outside the
// serving process: dataRoot is that process's data root (absolute). With
// mnt "", there is no list of served bots to compare the records with,
// and a bot's live state is what Postgres records. With the serving
// process's mount mnt, the bots served are the ones it lists, a bot's
// live state is what its status file says, and the binds under mnt are
// checked too (bindProblems).
func CheckOutside(ctx context.Context, rt runtime.Runtime, st *store.Store, dataRoot, mnt string) (CheckReport, error) {
	served := func() []string { return nil }
	live := func(ctx context.Context, name string) (Status, error) {
		rec, err := st.GetBot(ctx, name)
		if err != nil {
			return Status{}, err
		}
		return Status{Name: name, State: rec.Container.State, Pid: rec.Container.Pid, Snapshots: rec.Snapshots}, nil
	}
	if mnt != "" {
		served = func() []string {
			entries, _ := os.ReadDir(mnt)
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			return names
		}
		live = func(ctx context.Context, name string) (Status, error) {
			b, err := os.ReadFile(filepath.Join(mnt, name, "status"))
			if errors.Is(err, os.ErrNotExist) {
				return Status{}, errorf(KindNotFound, "not in the mount")
			}
			if err != nil {
				return Status{}, err
			}
			return ParseStatus(strings.TrimSpace(string(b)) + "\n")
		}
	}
	rep, err := CheckFrom(ctx, rt, st, dataRoot, served, live)
	if err != nil || mnt == "" {
		return rep, err
	}
	bp, err := bindProblems(mnt, dataRoot)
	if err != nil {
		return rep, err
	}
	rep.Problems = append(rep.Problems, bp...)
	sort.Strings(rep.Problems)
	return rep, nil
}

type checker struct {
	rt       runtime.Runtime
	st       *store.Store
	dataRoot string
	busy     func(name string) bool // being created (nil: nothing is)
	served   func() []string
	// live returns the bot's status, and what to call when done with it
	// (the bot stays still until then).
	live func(ctx context.Context, name string) (Status, func(), error)
}

func (ck checker) run(ctx context.Context) (CheckReport, error) {
	var rep CheckReport
	problem := func(format string, args ...any) { rep.Problems = append(rep.Problems, fmt.Sprintf(format, args...)) }
	recs, err := ck.st.ListBots(ctx)
	if err != nil {
		return rep, wrap(err, "check: bot records")
	}
	rep.Bots = len(recs)
	recorded := map[string]bool{}
	for _, rec := range recs {
		recorded[rec.Name] = true
		if err := ck.bot(ctx, rec.Name, problem); err != nil {
			return rep, err
		}
	}
	for _, name := range ck.served() {
		if !recorded[name] {
			problem("bot %s: served, but Postgres has no record", name)
		}
	}
	stray, err := unrecorded(ctx, ck.st, ck.dataRoot, recorded, ck.busy)
	if err != nil {
		return rep, wrap(err, "check: data root")
	}
	for _, e := range stray {
		problem("data root: %s has no bot record (a crash cut a delete or create short; reconcile moves it to the trash)",
			filepath.Join(ck.dataRoot, e.Rel))
	}
	ctrs, err := ck.rt.Containers(ctx)
	if err != nil {
		return rep, wrap(err, "check: containers")
	}
	for _, ci := range ctrs {
		if !recorded[ci.Bot] {
			rep.Orphans = append(rep.Orphans, ci.ID)
		}
	}
	leaks, err := ck.rt.NetworkLeaks(ctx)
	if err != nil {
		return rep, wrap(err, "check: network")
	}
	for _, l := range leaks {
		problem("network: %s is held by no running task", l)
	}
	sort.Strings(rep.Problems)
	sort.Strings(rep.Orphans)
	return rep, nil
}

func (ck checker) bot(ctx context.Context, name string, problem func(string, ...any)) error {
	status, done, err := ck.live(ctx, name)
	if KindOf(err) == KindNotFound {
		if begun, err := ck.deleteBegun(ctx, name); err != nil {
			return err
		} else if begun {
			problem("bot %s: a delete was cut short after its data went to the trash (reconcile drops the record)", name)
		} else {
			problem("bot %s: recorded, but not served", name)
		}
		return nil
	}
	if err != nil {
		return wrap(err, "check: status of "+name)
	}
	defer done()
	// Read again with the bot held still: an operation may have finished.
	rec, err := ck.st.GetBot(ctx, name)
	if store.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return wrap(err, "check: bot "+name)
	}
	if last, err := ck.st.LastEvent(ctx, rec.ID); err == nil && last.Type == "delete" {
		problem("bot %s: a delete was begun and not finished (reconcile finishes it)", name)
		return nil
	} else if err != nil && !store.IsNotFound(err) {
		return wrap(err, "check: events of "+name)
	}
	if fi, err := os.Lstat(rec.Container.DataPath); err != nil || !fi.IsDir() {
		problem("bot %s: data dir %s is missing", name, rec.Container.DataPath)
	}
	ci, err := ck.rt.Container(ctx, name)
	switch {
	case errdefs.IsNotFound(err):
		problem("bot %s: recorded, but its container is missing", name)
	case err != nil:
		return wrap(err, "check: container of "+name)
	case rec.Container.RootfsKey != "" && ci.RootfsKey != rec.Container.RootfsKey:
		problem("bot %s: container runs on rootfs %s, the record says %s", name, ci.RootfsKey, rec.Container.RootfsKey)
	}
	ti, err := ck.rt.Task(ctx, name)
	if err != nil && !errdefs.IsNotFound(err) {
		return wrap(err, "check: task of "+name)
	}
	running := err == nil && (ti.State == runtime.TaskRunning || ti.State == runtime.TaskPaused)
	live := status.State
	if running != (rec.Container.State == store.StateRunning) {
		problem("bot %s: task %s, but Postgres records %s", name, taskWord(running), rec.Container.State)
	}
	if running != (live == store.StateRunning) {
		problem("bot %s: task %s, but status says %s", name, taskWord(running), live)
	}
	if running && ti.Pid != uint32(status.Pid) {
		problem("bot %s: task pid %d, status says %d", name, ti.Pid, status.Pid)
	}

	snaps, err := ck.st.ListSnapshots(ctx, rec.ID)
	if err != nil {
		return wrap(err, "check: snapshots of "+name)
	}
	rsnaps, err := ck.rt.Snapshots(ctx, name)
	if err != nil {
		return wrap(err, "check: runtime snapshots of "+name)
	}
	inRuntime := map[string]bool{}
	for _, s := range rsnaps {
		if s.Role == "snapshot" {
			inRuntime[s.Name] = true
		}
		if s.Role == "leftover" {
			problem("bot %s: leftover runtime snapshot %s", name, s.Key)
		}
	}
	for _, s := range snaps {
		if !inRuntime[s.Name] {
			problem("bot %s: snapshot %s is recorded, but the runtime has no such snapshot", name, s.Name)
		}
		delete(inRuntime, s.Name)
		if s.DataPath != "" {
			if _, err := os.Stat(filepath.Join(s.DataPath, "manifest")); err != nil {
				problem("bot %s: snapshot %s: data copy %s is missing or unfinished", name, s.Name, s.DataPath)
			}
		}
	}
	for n := range inRuntime {
		problem("bot %s: runtime snapshot %s has no record", name, n)
	}
	for _, dir := range stagedRestores(rec.Container.DataPath) {
		problem("bot %s: a staged restore was left at %s", name, dir)
	}
	if len(snaps) != status.Snapshots {
		problem("bot %s: %d snapshots recorded, status says %d", name, len(snaps), status.Snapshots)
	}
	return nil
}

// deleteBegun says whether name has a record whose last event is the
// delete intent.
func (ck checker) deleteBegun(ctx context.Context, name string) (bool, error) {
	rec, err := ck.st.GetBot(ctx, name)
	if store.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, wrap(err, "check: bot "+name)
	}
	last, err := ck.st.LastEvent(ctx, rec.ID)
	if store.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, wrap(err, "check: events of "+name)
	}
	return last.Type == "delete", nil
}

func taskWord(running bool) string {
	if running {
		return "running"
	}
	return "not running"
}
