package fsnodes

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/memohfs/memohfs/control"
	"github.com/memohfs/memohfs/internal/vtree"
	"github.com/memohfs/memohfs/mount"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// Options shape the mount.
type Options struct {
	// AllowOther lets users other than root use the mount; bot dirs are
	// 0700 to their owner and the kernel checks modes (default_permissions).
	AllowOther bool
	// DataTTL is how long the kernel may answer lookups (found or not)
	// and stats of data/ itself: changes made behind the mount (by the
	// bot) are pushed to it by invalidation, so it can be long. 1h when
	// zero.
	DataTTL time.Duration
	// EntryTimeout and AttrTimeout are the same for the synthetic tree
	// (bots, snapshots); 1s when zero.
	EntryTimeout, AttrTimeout time.Duration
	// DataFds is the most host fds one tree (a bot's data/, a snapshot's
	// view) holds for the files the kernel has looked up; past it, files
	// are held by file handle (see fdbudget.go). 8192 when zero.
	DataFds int
	// DataBinds bind-mounts each bot's data dir over its data/ node
	// (binds.go), so the kernel serves it; the FUSE node stays under it.
	DataBinds bool
	// FollowSymlinks lets the host follow symlinks under the mount. Off,
	// with DataBinds, the mount and every bind are nosymfollow: a path
	// walk through a link a bot made answers ELOOP (readlink still reads
	// it). Binds are always nosymfollow.
	FollowSymlinks bool
	// NoPassthrough turns kernel passthrough off (for comparisons).
	NoPassthrough bool
	// Debug logs every FUSE request.
	Debug  bool
	Logger *slog.Logger
	// Metrics, if set, gets the mount's Prometheus metrics: FUSE requests
	// by opcode, how data/ is served, watcher overflows (metrics.go).
	Metrics prometheus.Registerer
}

// errnoOf maps the tree's errors (control's kinds, errnos) to errno.
func errnoOf(err error) syscall.Errno { return vtree.Errno(err) }

// Mounted is a served memohfs mount: go-fuse's server, the tree it
// serves and its mount point, as one value. Unmount ends all three in
// the order they need.
//
//	m, err := fsnodes.Mount("/memoh", ctl, fsnodes.Options{})
//	...
//	defer m.Unmount()
type Mounted struct {
	server *fuse.Server
	root   *Root
	dir    string
	// Replaced says what was on the mount point before: nothing, or a
	// stale mount replaced (mount.FUSE.Attach).
	Replaced mount.Replaced
}

// Stop ends what blocks the unmount: blocked readers of events, log and
// cmd/ streams are answered, the data/ binds and watchers let go. The
// mount stays; Unmount (or mount.Serve, given Stop as its
// ServeOptions.Stopping) takes it down. Safe to call more than once.
func (m *Mounted) Stop() { m.root.close() }

// Wait returns once the server has stopped serving (mount.Waiter).
func (m *Mounted) Wait() { m.server.Wait() }

// Unmount stops the tree (Stop), unmounts the mount (retried a few times
// while the kernel still counts it busy) and waits for the server to end.
func (m *Mounted) Unmount() error {
	m.Stop()
	var err error
	for try, delay := 0, 5*time.Millisecond; try < 5; try, delay = try+1, 2*delay {
		if err = syscall.Unmount(m.dir, unix.UMOUNT_NOFOLLOW); err == nil {
			m.server.Wait()
			return nil
		}
		if err != syscall.EBUSY {
			return err
		}
		time.Sleep(delay) // a file just closed may still be counted
	}
	return err
}

// DataIO says how data/ file I/O goes: "passthrough" (the kernel reads
// and writes the host file itself) or "fuse (why)".
func (m *Mounted) DataIO() string { return m.root.dataIO }

// DataPath says how a bot's data/ is served now: "bind" or "fuse".
func (m *Mounted) DataPath(bot string) string { return m.root.dataPath(bot) }

// WatchOverflows counts the times the watcher of a bot's data dir lost
// events (the kernel's queue overflowed) and rescanned.
func (m *Mounted) WatchOverflows(bot string) int { return m.root.watchOverflows(bot) }

// Mount serves the controller's bots at dir until the server is
// unmounted. A stale mount on dir (a memohfs before this one died) is
// replaced without dir ever being bare (mount.FUSE.Attach).
func Mount(dir string, c *control.Controller, o Options) (*Mounted, error) {
	if o.EntryTimeout == 0 {
		o.EntryTimeout = time.Second
	}
	if o.AttrTimeout == 0 {
		o.AttrTimeout = time.Second
	}
	if o.DataTTL == 0 {
		o.DataTTL = time.Hour
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	root := newRoot(c, o)
	neg := o.DataTTL
	opts := &fs.Options{
		MountOptions: fuse.MountOptions{
			AllowOther: o.AllowOther,
			FsName:     "memohfs",
			Name:       "memohfs",
			// The kernel checks permissions against the modes we report
			// (default_permissions, set at the mount): bot dirs are 0700
			// to their owner, host files keep theirs.
			EnableLocks: true,
			MaxWrite:    1 << 20,
			Debug:       o.Debug,
			Logger:      slog.NewLogLogger(o.Logger.Handler(), slog.LevelInfo),
			// The kernel caches POSIX ACLs (ls -l asks for them on every
			// file): without this each is a round trip.
			EnableAcl: true,
			// No GETXATTR(security.capability) round trip before every
			// write; memohfs clears setuid/setgid itself (see killsPrivs).
			// The mode and the caller's umask come apart (see umask.go),
			// and a create carries the caller's supplementary group.
			ExtraCapabilities: fuse.CAP_HANDLE_KILLPRIV_V2 | fuse.CAP_DONT_MASK | fuse.CAP_CREATE_SUPP_GROUP,
		},
		// No default timeouts: every node says how long the kernel may
		// cache it (go-fuse would turn an explicit 0 into its default).
		// Lookups that find nothing are cached for DataTTL unless the
		// node says otherwise; creations behind the mount drop them.
		NegativeTimeout: &neg,
		NullPermissions: true,
	}
	if o.NoPassthrough {
		opts.MountOptions.DisabledCapabilities |= fuse.CAP_PASSTHROUGH
	}
	raiseFdLimit(o.Logger)
	raw := &umaskFS{RawFileSystem: noFlushFS{fs.NewNodeFS(&top{root: root}, opts)}}
	// memohfs mounts, go-fuse serves the /dev/fuse fd it is given (its
	// "/dev/fd/N" mount point). The mount shows Root, a dir below the
	// filesystem's own root (see top). nosymfollow: the host follows no
	// symlink under the mount, on either path (a bot's absolute link
	// names the bot's files inside it, the host's outside);
	// FollowSymlinks turns it off.
	mo := mount.FUSEOptions{Name: "memohfs", AllowOther: o.AllowOther, DefaultPermissions: true, MaxRead: opts.MaxWrite, Root: topChild}
	if !o.FollowSymlinks {
		mo.Attrs |= unix.MOUNT_ATTR_NOSYMFOLLOW
	}
	f, err := mount.NewFUSE(dir, mo)
	if err != nil {
		root.close()
		return nil, err
	}
	var served fuse.RawFileSystem = raw
	var counts *fuseOps
	if o.Metrics != nil {
		counts = newFuseOps()
		served = countFS{RawFileSystem: raw, ops: counts}
	}
	server, err := fuse.NewServer(served, f.DevPath(), &opts.MountOptions)
	if err != nil {
		f.Close()
		unix.Close(f.Dev)
		root.close()
		return nil, err
	}
	go server.Serve()
	how, err := f.Attach()
	if err != nil {
		// Never attached, the filesystem is gone with its last mount fd,
		// and the kernel ends the connection: the server stops.
		root.close()
		return nil, err
	}
	m := &Mounted{server: server, root: root, dir: dir, Replaced: how}
	raw.dontMask.Store(server.KernelSettings().Flags64()&fuse.CAP_DONT_MASK != 0)
	root.dataIO = probeDataIO(server, o.NoPassthrough)
	o.Logger.Info("data/ file I/O", "mode", root.dataIO)
	if o.Metrics != nil {
		if err := registerMetrics(o.Metrics, root, counts); err != nil {
			m.Unmount()
			return nil, err
		}
	}
	// Private: the binds under the mount reach no other namespace (a
	// mount attached under a shared one is made shared).
	if err := mount.Private(dir, o.FollowSymlinks); err != nil {
		m.Unmount()
		return nil, err
	}
	root.startBinds(dir)
	return m, nil
}

// probeDataIO says how data/ file I/O goes: "passthrough" (the kernel
// reads and writes the host file itself) when the kernel offered it and
// accepts a backing file from us, else "fuse (why)", every read and write
// a round trip.
func probeDataIO(server *fuse.Server, disabled bool) string {
	switch {
	case disabled:
		return "fuse (passthrough turned off)"
	case server.KernelSettings().Flags64()&fuse.CAP_PASSTHROUGH == 0:
		return "fuse (the kernel offers no passthrough: Linux 6.9 or later needed)"
	}
	f, err := os.Open("/proc/self/exe")
	if err != nil {
		return "fuse (" + err.Error() + ")"
	}
	defer f.Close()
	id, errno := server.RegisterBackingFd(&fuse.BackingMap{Fd: int32(f.Fd())})
	if errno != 0 {
		return "fuse (the kernel refused a backing file: " + errno.Error() + "; passthrough needs CAP_SYS_ADMIN)"
	}
	server.UnregisterBackingFd(id)
	return "passthrough"
}

// ctxBackground is used for work a notification starts outside any
// request.
func ctxBackground() context.Context { return context.Background() }

// uncached is the cache timeout of things the kernel must ask about each
// time.
const uncached = time.Duration(0)

// noNegative keeps the kernel from caching a failed lookup (go-fuse caches
// ENOENT for NegativeTimeout when the entry timeout is left at 0).
func noNegative(out *fuse.EntryOut) { out.SetEntryTimeout(time.Nanosecond) }

// cacheEntry sets how long the kernel may keep an entry and its attrs.
func cacheEntry(out *fuse.EntryOut, entry, attr time.Duration) {
	out.SetEntryTimeout(entry)
	out.SetAttrTimeout(attr)
}

// raiseFdLimit lets memohfs hold one fd per host file the kernel knows
// (see dataNode), as virtiofsd does: the soft and hard limits go up to
// the kernel's per-process maximum (fs.nr_open) when memohfs may.
func raiseFdLimit(log *slog.Logger) {
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) != nil {
		return
	}
	max := lim.Max
	if b, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
		if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && v > max {
			max = v
		}
	}
	want := unix.Rlimit{Cur: max, Max: max}
	if unix.Setrlimit(unix.RLIMIT_NOFILE, &want) != nil {
		want = unix.Rlimit{Cur: lim.Max, Max: lim.Max}
		unix.Setrlimit(unix.RLIMIT_NOFILE, &want)
	}
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) == nil {
		setProcessFdMax(lim.Cur)
	}
	log.Debug("fd limit", "soft", lim.Cur, "hard", lim.Max)
}
