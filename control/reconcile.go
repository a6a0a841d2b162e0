package control

import (
	"context"
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

// setAutoStart records whether reconcile starts the bot after a restart.
func (c *Controller) setAutoStart(ctx context.Context, b *bot, on bool) error {
	if err := c.st.SetAutoStart(ctx, b.id(), on); err != nil {
		return wrap(err, "autostart")
	}
	if _, err := c.st.AddEvent(ctx, b.id(), store.Event{Type: "autostart", Payload: map[string]any{"on": on}}); err != nil {
		return wrap(err, "autostart")
	}
	b.mu.Lock()
	b.rec.Container.AutoStart = on
	b.mu.Unlock()
	b.eventsRecorded()
	return nil
}

// Report says what a reconcile found and did.
type Report struct {
	Recreated     []string // containers made again (rootfs kept when it survived)
	Restarted     []string // auto_start bots found down and started
	MarkedStopped []string // recorded as running, found down
	Corrected     []string // records brought in line with a live task
	Finished      []string // deletes a crash interrupted, completed
	Trashed       []string // data and snapshot dirs without a bot record, moved to the trash
	Adopted       []string // snapshots without a record, recorded
	Dropped       []string // records whose snapshot is gone, removed (data kept in trash)
	Released      []string // leaked addresses and netns pins freed
	Orphans       []string // containers labelled memohfs.bot with no record: reported, left alone
	Reaped        []string // commands an earlier daemon left running or unrecorded: ended, recorded
	Errors        []string
}

func (r Report) String() string {
	var parts []string
	add := func(what string, list []string) {
		if len(list) > 0 {
			parts = append(parts, fmt.Sprintf("%s: %s", what, strings.Join(list, ", ")))
		}
	}
	add("recreated", r.Recreated)
	add("restarted", r.Restarted)
	add("marked stopped", r.MarkedStopped)
	add("corrected", r.Corrected)
	add("finished deleting", r.Finished)
	add("moved unrecorded data to the trash", r.Trashed)
	add("adopted snapshots", r.Adopted)
	add("dropped records", r.Dropped)
	add("released", r.Released)
	add("orphans", r.Orphans)
	add("reaped commands", r.Reaped)
	add("errors", r.Errors)
	if len(parts) == 0 {
		return "nothing to do"
	}
	return strings.Join(parts, "; ")
}

// Reconcile brings Postgres records and the runtime back in step after a
// restart or a crash: for every recorded bot it looks its container and
// task up by id; a missing container is made again on its last rootfs
// (never removing a snapshot); a task recorded as running but gone is
// restarted if the bot has auto_start, else recorded as stopped; a delete
// a crash interrupted is finished; snapshots and their records are paired
// again. What bots/ and snapshots/ of the data root hold for a name no
// record has is moved to the trash. Containers carrying the memohfs label
// without a record are reported, not deleted. A task of any memohfs
// container that is not live (created, stopped, unknown, or held by
// containerd but not described by its shim, which a kill in the middle
// of a delete leaves) is killed and deleted with its shim. Leaked
// addresses are released. Commands an earlier daemon started through
// cmd/ and did not see end are ended and their end recorded. Run it on a context of its own: it must not be
// cut short by a start-up deadline.
func (c *Controller) Reconcile(ctx context.Context) (Report, error) {
	rep, err := c.reconcile(ctx)
	c.m.reconciled(rep)
	return rep, err
}

func (c *Controller) reconcile(ctx context.Context) (Report, error) {
	var rep Report
	// Deletes cut off after the data went to the trash: drop the record.
	c.mu.RLock()
	doomed := make(map[string]string, len(c.deleting))
	for n, id := range c.deleting {
		doomed[n] = id
	}
	c.mu.RUnlock()
	for _, n := range sortedKeys(doomed) {
		if err := c.rt.Delete(ctx, n); err != nil && !errdefs.IsNotFound(err) {
			rep.Errors = append(rep.Errors, n+": finish delete: "+err.Error())
			continue
		}
		if _, err := c.finishDelete(ctx, n, doomed[n]); err != nil {
			rep.Errors = append(rep.Errors, n+": finish delete: "+err.Error())
			continue
		}
		rep.Finished = append(rep.Finished, n)
	}
	c.mu.RLock()
	bots := make([]*bot, 0, len(c.bots))
	for _, b := range c.bots {
		bots = append(bots, b)
	}
	c.mu.RUnlock()
	sort.Slice(bots, func(i, j int) bool { return bots[i].name < bots[j].name })
	for _, b := range bots {
		if err := c.reconcileBot(ctx, b, &rep); err != nil {
			rep.Errors = append(rep.Errors, b.name+": "+err.Error())
		}
	}
	if err := c.trashUnrecorded(ctx, &rep); err != nil {
		rep.Errors = append(rep.Errors, "unrecorded data: "+err.Error())
	}
	// Containers nobody recorded.
	ctrs, err := c.rt.Containers(ctx)
	if err != nil {
		return rep, wrap(err, "reconcile: list containers")
	}
	for _, ci := range ctrs {
		c.mu.RLock()
		_, known := c.bots[ci.Bot]
		c.mu.RUnlock()
		if !known && ci.Bot != "" {
			rep.Orphans = append(rep.Orphans, ci.ID)
			c.log.Warn("container labelled as a memohfs bot has no record: left alone",
				"container", ci.ID, "bot", ci.Bot, "data", ci.DataDir)
			// Alone but for a task that is not live: nothing would
			// ever end its shim.
			if what, err := c.rt.EndLeftoverTask(ctx, ci.Bot); err != nil && !errdefs.IsNotFound(err) {
				rep.Errors = append(rep.Errors, ci.ID+": end a leftover task: "+err.Error())
			} else if what != "" {
				rep.Released = append(rep.Released, what)
			}
		}
	}
	// A task that ended after its bot was reconciled, before the event
	// stream (subscribed as the controller started, asynchronously) was
	// up, told nobody: read every running bot's task once more.
	c.refreshRunning(ctx)
	released, err := c.rt.ReleaseNetworkLeaks(ctx)
	rep.Released = append(rep.Released, released...)
	if err != nil {
		rep.Errors = append(rep.Errors, "release network leaks: "+err.Error())
	}
	c.log.Info("reconcile", "report", rep.String())
	return rep, nil
}

func (c *Controller) reconcileBot(ctx context.Context, b *bot, rep *Report) error {
	id := b.id()
	if last, err := c.st.LastEvent(ctx, id); err == nil && last.Type == "delete" {
		// A delete a crash interrupted: finish it.
		b.setLive(store.StateStopped, 0, "")
		if err := c.Delete(ctx, b.name); err != nil {
			return wrap(err, "finish delete")
		}
		rep.Finished = append(rep.Finished, b.name)
		return nil
	}
	if err := b.lock(ctx); err != nil {
		return err
	}
	defer b.unlock()
	// Commands first: a bot restarted below must not meet them. One
	// that cannot be ended now is tried again until it is: its record
	// must not stay open.
	if err := c.reapCmds(ctx, b, rep); err != nil {
		rep.Errors = append(rep.Errors, b.name+": "+err.Error())
		c.reapLater(b)
	}
	if err := c.reconcileSnapshots(ctx, b, rep); err != nil {
		return err
	}
	b.mu.Lock()
	rec := b.rec
	b.mu.Unlock()
	info, err := c.rt.Container(ctx, b.name)
	if errdefs.IsNotFound(err) {
		from := ""
		if snaps, err := c.st.ListSnapshots(ctx, id); err == nil && len(snaps) > 0 {
			from = snaps[len(snaps)-1].Name // the newest, if the rootfs went too
		}
		info, err = c.rt.Create(ctx, runtime.BotSpec{Bot: b.name, DataDir: rec.Container.DataPath,
			RootfsKey: rec.Container.RootfsKey, FromSnapshot: from})
		if err != nil {
			return wrap(err, "re-create the container")
		}
		kept := info.RootfsKey == rec.Container.RootfsKey
		if err := c.st.SetRootfs(ctx, id, info.RootfsKey, &store.Event{Type: "recreate",
			Payload: map[string]any{"rootfs": info.RootfsKey, "kept": kept, "reconcile": true}}); err != nil {
			return wrap(err, "record the re-created container")
		}
		b.mu.Lock()
		b.rec.Container.RootfsKey = info.RootfsKey
		b.mu.Unlock()
		rep.Recreated = append(rep.Recreated, fmt.Sprintf("%s (rootfs kept: %v)", b.name, kept))
	} else if err != nil {
		return wrap(err, "container")
	} else if info.RootfsKey != rec.Container.RootfsKey {
		if err := c.st.SetRootfs(ctx, id, info.RootfsKey, nil); err != nil {
			return wrap(err, "record the rootfs")
		}
		b.mu.Lock()
		b.rec.Container.RootfsKey = info.RootfsKey
		b.mu.Unlock()
		rep.Corrected = append(rep.Corrected, b.name+" rootfs")
	}

	// What a crash mid-snapshot or mid-restore left: half-made runtime
	// snapshots, an old rootfs, a staged copy of data/.
	removed, err := c.rt.RemoveLeftovers(ctx, b.name)
	for _, k := range removed {
		rep.Released = append(rep.Released, "snapshot "+k)
	}
	if err != nil {
		return wrap(err, "remove leftover snapshots")
	}
	for _, dir := range stagedRestores(c.DataDir(b.name)) {
		dst := filepath.Join(c.opts.DataRoot, "trash", filepath.Base(dir))
		if err := os.Rename(dir, dst); err != nil {
			return wrap(err, "move a staged restore aside")
		}
		rep.Released = append(rep.Released, "staged restore "+filepath.Base(dir)+" (moved to trash)")
	}

	ti, err := c.rt.Task(ctx, b.name)
	if err != nil {
		return wrap(err, "task")
	}
	recorded := rec.Container.State
	switch {
	case ti.State == runtime.TaskRunning || ti.State == runtime.TaskPaused:
		if recorded != store.StateRunning || rec.Container.Pid != int(ti.Pid) || rec.Container.IP != ti.IP {
			r, err := c.st.SetState(ctx, id, store.StateChange{State: store.StateRunning, Pid: int(ti.Pid), IP: ti.IP,
				Event: &store.Event{Type: "reconcile", Payload: map[string]any{"found": "running", "pid": ti.Pid}}})
			if err != nil {
				return wrap(err, "record the running task")
			}
			b.apply(r)
			rep.Corrected = append(rep.Corrected, b.name+" running")
		} else {
			b.setLive(store.StateRunning, int(ti.Pid), ti.IP)
		}
	case recorded == store.StateRunning || recorded == store.StateStarting || recorded == store.StateStopping:
		if rec.Container.AutoStart {
			b.setLive(store.StateStopped, 0, "")
			if err := c.start(ctx, b); err != nil {
				return wrap(err, "restart (auto_start)")
			}
			rep.Restarted = append(rep.Restarted, b.name)
			break
		}
		st, err := c.rt.Stop(ctx, b.name, 0) // delete the dead task, release its address
		if err != nil {
			return wrap(err, "clean up the dead task")
		}
		var exit *int
		if ti.HasExited {
			code := int(ti.ExitCode)
			exit = &code
		} else if st.HasExited {
			code := int(st.ExitCode)
			exit = &code
		}
		payload := map[string]any{"reconcile": true}
		if exit != nil {
			payload["exit"] = *exit
		}
		r, err := c.st.SetState(ctx, id, store.StateChange{State: store.StateStopped, ExitCode: exit, Stopped: true,
			Event: &store.Event{Type: "exit", Payload: payload}})
		if err != nil {
			return wrap(err, "record the stop")
		}
		b.apply(r)
		rep.MarkedStopped = append(rep.MarkedStopped, b.name)
	default:
		// Down, and recorded as down: still clear a dead task entry and
		// any network it left.
		if ti.State != runtime.TaskNone {
			if _, err := c.rt.Stop(ctx, b.name, 0); err != nil {
				return wrap(err, "clean up the dead task")
			}
		}
		b.setLive(recorded, 0, "")
	}
	// A task containerd holds but cannot describe (a kill cut a delete
	// off between containerd and its shim) reads as none above, refuses
	// the next start and keeps its shim running: end it.
	if what, err := c.rt.EndLeftoverTask(ctx, b.name); err != nil {
		return wrap(err, "end a leftover task")
	} else if what != "" {
		rep.Released = append(rep.Released, what)
	}
	b.eventsRecorded()
	return nil
}

// reconcileSnapshots pairs the bot's runtime snapshots with their records:
// a snapshot a crash left unrecorded is recorded (adopted); a record whose
// runtime snapshot is gone is removed, its data copy moved to trash; and
// half-made data copies are removed.
func (c *Controller) reconcileSnapshots(ctx context.Context, b *bot, rep *Report) error {
	id := b.id()
	recs, err := c.st.ListSnapshots(ctx, id)
	if err != nil {
		return wrap(err, "snapshot records")
	}
	runtimeSnaps, err := c.rt.Snapshots(ctx, b.name)
	if err != nil {
		return wrap(err, "runtime snapshots")
	}
	byName := map[string]runtime.SnapshotInfo{}
	for _, s := range runtimeSnaps {
		if s.Role == "snapshot" {
			byName[s.Name] = s
		}
	}
	recorded := map[string]bool{}
	for _, r := range recs {
		recorded[r.Name] = true
		if _, ok := byName[r.Name]; ok {
			continue
		}
		if err := c.st.DeleteSnapshot(ctx, id, r.Name); err != nil {
			return wrap(err, "drop the record of lost snapshot "+r.Name)
		}
		if r.DataPath != "" {
			dst := filepath.Join(c.opts.DataRoot, "trash", b.name+"-snapshot-"+r.Name+"-"+time.Now().UTC().Format("20060102T150405Z"))
			if err := os.Rename(r.DataPath, dst); err != nil && !os.IsNotExist(err) {
				c.log.Warn("move the data of a lost snapshot aside", "bot", b.name, "snapshot", r.Name, "err", err)
			}
		}
		rep.Dropped = append(rep.Dropped, b.name+"/"+r.Name)
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return byName[names[i]].Created.Before(byName[names[j]].Created) })
	for _, n := range names {
		if recorded[n] {
			continue
		}
		s := byName[n]
		source := s.Labels["memohfs.source"]
		if source == "" {
			source = sourceManual
		}
		dataPath := s.Labels["memohfs.data"]
		if _, err := os.Stat(filepath.Join(dataPath, "manifest")); err != nil {
			dataPath = "" // the data copy never finished
		}
		if _, err := c.st.CreateSnapshot(ctx, id, store.NewSnapshot{Name: n, RuntimeKey: s.Key, Parent: s.Parent,
			Source: source, DataPath: dataPath}); err != nil {
			return wrap(err, "record unrecorded snapshot "+n)
		}
		rep.Adopted = append(rep.Adopted, b.name+"/"+n)
	}
	// Data copies of snapshots that never got that far.
	tmps, _ := filepath.Glob(filepath.Join(c.opts.DataRoot, "snapshots", b.name, ".tmp-*"))
	for _, t := range tmps {
		os.RemoveAll(t)
	}
	if len(rep.Adopted)+len(rep.Dropped) > 0 {
		if r, err := c.st.GetBot(ctx, b.name); err == nil {
			b.mu.Lock()
			b.rec.Snapshots, b.rec.Version = r.Snapshots, r.Version
			b.mu.Unlock()
		}
	}
	return nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// stagedRestores lists copies of data/ a restore staged next to it and
// did not finish with.
func stagedRestores(dataDir string) []string {
	dirs, _ := filepath.Glob(dataDir + restoreSuffix + "*")
	return dirs
}
