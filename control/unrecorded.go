package control

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/memohfs/memohfs/runtime"
	"github.com/memohfs/memohfs/store"
)

// dataEntry is one entry of the data root's bots/ or snapshots/, and the
// bot name it belongs to.
type dataEntry struct {
	Rel   string // "bots/NAME", "bots/NAME.restore-X", "snapshots/NAME"
	Owner string // NAME (the entry's own name if it names no bot)
}

// dataEntries lists bots/* and snapshots/* under root with their owners:
// a staged restore (bots/NAME.restore-X) belongs to NAME. A missing dir
// lists nothing.
func dataEntries(root string) ([]dataEntry, error) {
	var out []dataEntry
	for _, dir := range []string{"bots", "snapshots"} {
		ents, err := os.ReadDir(filepath.Join(root, dir))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			owner := e.Name()
			if i := strings.Index(owner, restoreSuffix); dir == "bots" && i > 0 && runtime.ValidBotName(owner[:i]) {
				owner = owner[:i]
			}
			out = append(out, dataEntry{Rel: dir + "/" + e.Name(), Owner: owner})
		}
	}
	return out, nil
}

// unrecorded returns the entries of dataEntries whose owner has no bot
// record, asking Postgres again for each owner the records listed before
// did not have (a create may have finished since) and leaving out those
// busy says are being created.
func unrecorded(ctx context.Context, st *store.Store, root string, recorded map[string]bool, busy func(string) bool) ([]dataEntry, error) {
	ents, err := dataEntries(root)
	if err != nil {
		return nil, err
	}
	known := map[string]bool{}
	var out []dataEntry
	for _, e := range ents {
		if recorded[e.Owner] || (busy != nil && busy(e.Owner)) {
			continue
		}
		has, ok := known[e.Owner]
		if !ok {
			_, err := st.GetBot(ctx, e.Owner)
			if err != nil && !store.IsNotFound(err) {
				return nil, err
			}
			has = err == nil
			known[e.Owner] = has
		}
		if !has {
			out = append(out, e)
		}
	}
	return out, nil
}

// trashUnrecorded moves to the trash what bots/ and snapshots/ hold for
// names no bot record has: data of a bot whose delete or create a crash
// cut short. Nothing there is served, and the next mkdir of the name must
// start empty. Each name is reserved while it is moved, as a create
// reserves it.
func (c *Controller) trashUnrecorded(ctx context.Context, rep *Report) error {
	c.mu.RLock()
	recorded := map[string]bool{}
	for n := range c.bots {
		recorded[n] = true
	}
	for n := range c.deleting {
		recorded[n] = true
	}
	c.mu.RUnlock()
	ents, err := unrecorded(ctx, c.st, c.opts.DataRoot, recorded, nil)
	if err != nil {
		return err
	}
	owners := map[string]bool{}
	for _, e := range ents {
		owners[e.Owner] = true
	}
	names := make([]string, 0, len(owners))
	for n := range owners {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c.mu.Lock()
		if c.bots[n] != nil || c.pending[n] || c.deleting[n] != "" {
			c.mu.Unlock()
			continue // made meanwhile
		}
		c.pending[n] = true
		c.mu.Unlock()
		trash, moved, err := c.moveToTrash(n)
		c.mu.Lock()
		delete(c.pending, n)
		c.mu.Unlock()
		if len(moved) > 0 {
			c.log.Warn("data without a bot record moved to the trash", "name", n, "moved", moved, "trash", trash)
			rep.Trashed = append(rep.Trashed, strings.Join(moved, ", ")+" -> "+trash)
		}
		if err != nil {
			rep.Errors = append(rep.Errors, "move unrecorded data of "+n+" to the trash: "+err.Error())
		}
	}
	return nil
}
