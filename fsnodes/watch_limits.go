package fsnodes

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// watchLimits bound what watching one tree (one bot's data dir) may
// take. Beyond them the tree is degraded, not broken: what is not watched
// is served uncached (see watcher.covers), and the first time each limit
// is hit it is logged once for that tree, with the reason and the fix.
//
// Whatever the limits, a watched tree holds 2 fds (its inotify instance
// and an O_PATH fd of its root) and its walk at most 2 more at any time
// (the directory being listed and, while a path longer than one openat2
// chunk is opened, the chunk before it): at most watchMaxFds, however
// deep or wide the tree.
type watchLimits struct {
	// MaxWatches is the most directories of one tree that are watched
	// (watched or queued to be). 0 means defaultMaxWatches.
	MaxWatches int
	// MaxDepth is the depth of the deepest directory watched, the tree's
	// root being 0. 0 means defaultMaxDepth.
	MaxDepth int
}

const (
	// defaultMaxWatches: each inotify watch pins an inode and a mark in
	// kernel memory (the kernel counts about 1 KiB a watch when it sizes
	// fs.inotify.max_user_watches at 1% of RAM), and every watch memohfs
	// holds counts against that one per-user limit, shared by all bots
	// and every other root process. 16384 bounds one bot's share to
	// ~16-20 MiB of kernel memory and leaves the default limit of a small
	// host (~190k on 2 GiB) room for about ten bots at their maximum,
	// while covering big workspaces (a Linux kernel checkout has ~5k
	// directories, a large node_modules 5-15k).
	defaultMaxWatches = 16384
	// defaultMaxDepth: deeper than what tools make (package paths and
	// nested node_modules run 10-40 levels); a deeper chain is generated
	// and only costs watches and ever longer walks from the root.
	defaultMaxDepth = 128
	// watchMaxFds is the most fds one watched tree holds (see watchLimits).
	watchMaxFds = 4
)

// WatchesPerBot is the most inotify watches memohfs holds for one bot's
// data dir (with the default limits), each from root's per-user
// fs.inotify.max_user_watches; each bot also takes one of
// fs.inotify.max_user_instances. memohfs doctor sizes them from it.
const WatchesPerBot = defaultMaxWatches

func (l watchLimits) withDefaults() watchLimits {
	if l.MaxWatches <= 0 {
		l.MaxWatches = defaultMaxWatches
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = defaultMaxDepth
	}
	return l
}

// Why a tree is degraded: each is logged once per tree.
const (
	degradedWatches   = "watch limit"
	degradedDepth     = "depth limit"
	degradedHost      = "host watch limit"
	degradedInstances = "host instance limit"
	degradedFds       = "fd limit"
	degradedOverflow  = "overflow"
	degradedOther     = "unwatchable directory"
)

// degrade records that tw is not fully watched, and logs it (with the
// reason and the fix) the first time for each kind.
func (tw *treeWatch) degrade(kind string, err error) {
	tw.lmu.Lock()
	first := !tw.logged[kind]
	tw.logged[kind] = true
	tw.lmu.Unlock()
	if !first {
		return
	}
	const uncached = "; what is not watched is served uncached (each access asks memohfs)"
	var reason, fix string
	switch kind {
	case degradedWatches:
		reason = fmt.Sprintf("the bot's data dir has more directories than its watch limit (%d)", tw.w.lim.MaxWatches) + uncached
		fix = "keep fewer directories in the bot's data dir (build and dependency trees), or raise the per-bot limit"
	case degradedDepth:
		reason = fmt.Sprintf("the bot's data dir has directories deeper than %d levels", tw.w.lim.MaxDepth) + uncached
		fix = "keep the bot's directory tree shallower"
	case degradedHost:
		cur := inotifySysctl("max_user_watches")
		reason = fmt.Sprintf("the host's inotify watches are used up (fs.inotify.max_user_watches=%d, shared by all bots)", cur) + uncached
		fix = fmt.Sprintf("sysctl -w fs.inotify.max_user_watches=%d (see memohfs doctor)", max(2*cur, 1<<20))
	case degradedInstances:
		cur := inotifySysctl("max_user_instances")
		reason = fmt.Sprintf("no inotify instance for this bot (one per bot; memohfs takes at most half of fs.inotify.max_user_instances=%d, the rest is the host's): its data/ is served uncached", cur)
		fix = fmt.Sprintf("sysctl -w fs.inotify.max_user_instances=%d (see memohfs doctor), then restart memohfs", max(2*cur, 1024))
	case degradedFds:
		reason = "memohfs is out of file descriptors" + uncached
		fix = "raise memohfs's fd limit (ulimit -n, LimitNOFILE= in its unit)"
	case degradedOverflow:
		cur := inotifySysctl("max_queued_events")
		reason = fmt.Sprintf("change notifications were lost (more than fs.inotify.max_queued_events=%d queued): "+
			"this bot's caches of data/ were dropped and its directories watched again", cur)
		fix = fmt.Sprintf("sysctl -w fs.inotify.max_queued_events=%d", max(4*cur, 65536))
	default:
		reason = "a directory of the bot's data dir could not be watched" + uncached
		fix = "see the error"
	}
	args := []any{"dir", tw.root, "reason", reason, "fix", fix}
	if err != nil {
		args = append(args, "err", err)
	}
	tw.w.log.Warn("data/ change notification degraded for one bot", args...)
}

// degradeFor is degrade with the kind an error from opening or watching
// a directory stands for.
func (tw *treeWatch) degradeFor(err error) {
	switch {
	case errors.Is(err, unix.ENOSPC):
		tw.degrade(degradedHost, err)
	case errors.Is(err, unix.EMFILE), errors.Is(err, unix.ENFILE):
		tw.degrade(degradedFds, err)
	default:
		tw.degrade(degradedOther, err)
	}
}

// gone reports whether err from opening a directory means there is no
// directory there any more (removed, or swapped for a symlink or a
// file): nothing to watch, nothing lost.
func gone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) ||
		errors.Is(err, unix.EXDEV)
}

// inotifySysctl reads /proc/sys/fs/inotify/name (0 if it cannot).
func inotifySysctl(name string) int {
	b, err := os.ReadFile("/proc/sys/fs/inotify/" + name)
	if err != nil {
		return 0
	}
	v, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return v
}

// memohfs's share of the host's inotify instances.
//
// fs.inotify.max_user_instances (128 on a stock kernel) is shared by
// every process of the user, and memohfs runs as root: one instance per
// bot would leave root's other daemons (and memohfs's own snapshot and
// test tools) none once a host has that many bots. So memohfs takes at
// most half of it, across all its trees; a bot past that is served
// uncached (degradedInstances says so, with the sysctl that lifts it).
var instances struct {
	held atomic.Int64
	once sync.Once
	max  int64
}

// takeInstance reserves one instance of memohfs's share, or says there
// is none left.
func takeInstance() bool {
	instances.once.Do(func() {
		instances.max = max(1, int64(inotifySysctl("max_user_instances"))/2)
	})
	for {
		n := instances.held.Load()
		if n >= instances.max {
			return false
		}
		if instances.held.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// releaseInstance gives back what takeInstance reserved.
func releaseInstance() { instances.held.Add(-1) }
