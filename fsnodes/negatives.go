package fsnodes

import (
	"sync"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Negative entries the kernel holds.
//
// A lookup that finds nothing is cached by the kernel as a negative
// entry, for the tree's entry TTL (an hour by default), and a name made
// behind the mount drops it through the watcher. When the watcher loses
// events (the inotify queue overflowed: a bot can do that at will) it
// cannot say which names were made, and go-fuse only knows the entries
// that exist. So the tree remembers the names it answered missing, and
// an overflow drops each of them (invalidateAll).
//
// The memory is bounded: past negMax live names, a missing name is
// cached for negShort only, which bounds how long it can be missed after
// an overflow.
type negatives struct {
	mu sync.Mutex
	m  map[negKey]time.Time // when the kernel's entry lapses
}

type negKey struct {
	dir  *gofs.Inode
	name string
}

const (
	negMax   = 4096
	negShort = time.Second
)

// note records that dir/name was answered missing with out, to be cached
// for ttl, or shortens the caching if too many are remembered.
func (g *negatives) note(dir *gofs.Inode, name string, ttl time.Duration, out *fuse.EntryOut) {
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.m == nil {
		g.m = map[negKey]time.Time{}
	}
	if len(g.m) >= negMax {
		for k, until := range g.m {
			if now.After(until) {
				delete(g.m, k)
			}
		}
	}
	if len(g.m) >= negMax {
		out.SetEntryTimeout(min(negShort, ttl))
		return
	}
	g.m[negKey{dir, name}] = now.Add(ttl)
}

// drop forgets dir/name: it was found, or its entry dropped.
func (g *negatives) drop(dir *gofs.Inode, name string) {
	g.mu.Lock()
	if len(g.m) > 0 {
		delete(g.m, negKey{dir, name})
	}
	g.mu.Unlock()
}

// take returns the names the kernel may still hold as missing, and
// forgets them.
func (g *negatives) take() []negKey {
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	var ks []negKey
	for k, until := range g.m {
		if now.Before(until) {
			ks = append(ks, k)
		}
	}
	g.m = nil
	return ks
}
