// Package doctor checks what memohfs needs on this machine: /dev/fuse,
// data/ binds, fusermount3, runc, the CNI plugins, cgroups, the inotify
// limits, overlay, v9fs (for mounting --9p here), the binaries `up` runs, and the containerd and
// Postgres `serve` connects to. Run makes each check and says, for each,
// whether it passed, whether it is needed, what it found and how to fix
// it; `memohfs doctor` prints that as a table. It changes nothing on the
// machine (the containerd client it dials with keeps its scratch files
// under os.TempDir()).
package doctor

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/memohfs/memohfs/fsnodes"
	"github.com/memohfs/memohfs/internal/daemon"
	"github.com/memohfs/memohfs/internal/embedded"
	"github.com/memohfs/memohfs/mount"
	"github.com/memohfs/memohfs/runtime"
	"github.com/memohfs/memohfs/store"
)

// Options are what Run checks against.
type Options struct {
	CNIBinDirs        []string // CNI plugin dirs (--cni-bin-dir, split)
	ContainerdAddress string   // the containerd serve would connect to
	DatabaseURL       string   // the Postgres serve would connect to ("": none given)
	ContainerdBin     string   // where up would find containerd ("": next to memohfs, then PATH)
	RequireServe      bool     // the containerd and Postgres serve connects to are needed, not only wanted
	Bots              int      // how many bots this host serves at once (sizes the inotify checks; at least 1)
	NinePSocket       string   // the 9P socket a mount would use, for the hint ("": serve's default)
}

// Check is one check's outcome: one line of doctor's table.
type Check struct {
	Name   string
	Needed bool // a failure makes doctor fail
	OK     bool
	Detail string // what was found
	Fix    string // what to do when !OK
}

// Status is the check's word in the table: "ok"; "FAIL" when a needed
// check failed; "warn" when one that is not needed did.
func (c Check) Status() string {
	switch {
	case c.OK:
		return "ok"
	case c.Needed:
		return "FAIL"
	default:
		return "warn"
	}
}

// Failed says whether the check is needed and failed.
func (c Check) Failed() bool { return c.Needed && !c.OK }

// Run makes every check, in the table's order: the host's (/dev/fuse,
// binds, programs, CNI plugins, cgroups, inotify, overlay), then what up
// runs itself, then what serve connects to (given at most 2 seconds
// together, less if ctx ends sooner).
func Run(ctx context.Context, o Options) []Check {
	var out []Check
	add := func(ch Check) { out = append(out, ch) }

	if f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0); err != nil {
		add(Check{Name: "/dev/fuse", Needed: true, Detail: err.Error(), Fix: "load the fuse module (modprobe fuse) or give the container /dev/fuse"})
	} else {
		f.Close()
		add(Check{Name: "/dev/fuse", OK: true, Needed: true, Detail: "opens"})
	}
	add(binds())
	add(lookBin(Check{Name: "fusermount3", Fix: "apt-get install fuse3 (needed to mount as a user; root mounts directly)"}))
	runc := lookBin(Check{Name: "runc", Needed: true, Fix: "apt-get install runc"})
	if runc.OK {
		if v, err := exec.Command("runc", "--version").Output(); err == nil {
			runc.Detail = strings.SplitN(string(v), "\n", 2)[0]
		}
	}
	add(runc)

	add(cniPlugins(o.CNIBinDirs))
	add(cgroups())
	for _, ch := range inotify(o.Bots) {
		add(ch)
	}
	add(overlay())
	add(v9fs(o.NinePSocket))

	// What `up` runs itself.
	add(upContainerd(o.ContainerdBin))
	add(upPostgres())

	// What `serve` connects to.
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	add(serveContainerd(ctx, o.ContainerdAddress, o.CNIBinDirs, o.RequireServe))
	add(servePostgres(ctx, o.DatabaseURL, o.RequireServe))
	return out
}

// cniPlugins checks that each plugin memohfs's network uses is an
// executable in one of dirs (list names them in the detail).
func cniPlugins(dirs []string) Check {
	var missing []string
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		found := false
		for _, d := range dirs {
			if fi, err := os.Stat(filepath.Join(d, p)); err == nil && fi.Mode()&0o111 != 0 {
				found = true
			}
		}
		if !found {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return Check{Name: "CNI plugins", Needed: true, Detail: "missing " + strings.Join(missing, ", ") + " in " + strings.Join(dirs, ":"),
			Fix: "apt-get install containernetworking-plugins (or --cni-bin-dir)"}
	}
	return Check{Name: "CNI plugins", OK: true, Needed: true, Detail: "bridge, host-local, loopback"}
}

// cgroups checks for cgroup v2, or v1 with the freezer (a live snapshot
// pauses the bot).
func cgroups() Check {
	cg := Check{Name: "cgroups", Needed: true, Fix: "mount cgroups (v2 at /sys/fs/cgroup, or v1 with the freezer controller)"}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		cg.OK, cg.Detail = true, "v2 (unified)"
	} else if _, err := os.Stat("/sys/fs/cgroup/freezer"); err == nil {
		cg.OK, cg.Detail = true, "v1 with freezer (pause for live snapshots)"
	} else {
		cg.Detail = "no cgroup v2 and no v1 freezer"
	}
	return cg
}

// overlay checks that the kernel has overlayfs (the default snapshotter).
func overlay() Check {
	fsys, _ := os.ReadFile("/proc/filesystems")
	if strings.Contains(string(fsys), "\toverlay\n") {
		return Check{Name: "overlay", OK: true, Needed: true, Detail: "in /proc/filesystems"}
	}
	return Check{Name: "overlay", Needed: true, Detail: "overlay is not in /proc/filesystems", Fix: "modprobe overlay (or --snapshotter native)"}
}

// v9fs says whether this kernel can mount the tree over 9P (--9p) itself,
// and how. memohfs serves 9P without it: a VM's or another machine's
// kernel mounts, or a 9P client in Go or plan9port dials.
func v9fs(sock string) Check {
	if sock == "" {
		sock = filepath.Join(daemon.DefaultRunDir, daemon.NinePSocket)
	}
	how := "mount -t 9p -o trans=unix,version=9p2000.L,access=client,cache=none,nosymfollow " + sock + " /mnt/memoh"
	fsys, _ := os.ReadFile("/proc/filesystems")
	if strings.Contains(string(fsys), "\t9p\n") {
		return Check{Name: "9p (v9fs)", OK: true, Detail: "in /proc/filesystems; with --9p unix: " + how}
	}
	return Check{Name: "9p (v9fs)", Detail: "this kernel has no v9fs (only needed to mount --9p here; clients elsewhere: " + how + ")",
		Fix: "modprobe 9p 9pnet (CONFIG_9P_FS); or mount from a VM or another machine"}
}

// upContainerd checks for the containerd binaries up runs (in
// configured, else next to memohfs, else in PATH) and says the version.
func upContainerd(configured string) Check {
	dir, err := daemon.FindBin(configured, "containerd", "containerd-shim-runc-v2")
	if err != nil {
		return Check{Name: "containerd (for up)", Detail: err.Error(), Fix: "make build (it copies them to bin/), or --containerd-bin"}
	}
	v, _ := exec.Command(filepath.Join(dir, "containerd"), "--version").Output()
	return Check{Name: "containerd (for up)", OK: true, Detail: strings.TrimSpace(string(v))}
}

// upPostgres checks for the Postgres binaries up runs and says the
// version.
func upPostgres() Check {
	dir, err := embedded.PostgresBinDir()
	if err != nil {
		return Check{Name: "postgres (for up)", Detail: err.Error(), Fix: "apt-get install postgresql"}
	}
	v, _ := exec.Command(filepath.Join(dir, "postgres"), "--version").Output()
	return Check{Name: "postgres (for up)", OK: true, Detail: strings.TrimSpace(string(v))}
}

// serveContainerd asks the containerd at address for its version. The
// client's network is set up with the CNI plugin dirs and a conf dir
// under os.TempDir(): nothing of the host's is written.
func serveContainerd(ctx context.Context, address string, cniDirs []string, needed bool) Check {
	cd := Check{Name: "containerd " + address, Needed: needed,
		Fix: "start containerd, or point --containerd-address at it (not needed for up)"}
	rt, err := runtime.New(runtime.Config{Address: address, StateDir: os.TempDir(),
		Network: runtime.NetworkConfig{PluginDirs: cniDirs, ConfDir: filepath.Join(os.TempDir(), "memohfs-doctor")}})
	if err != nil {
		cd.Detail = firstLine(err.Error())
		return cd
	}
	defer rt.Close()
	if v, err := rt.Version(ctx); err == nil {
		cd.OK, cd.Detail = true, "version "+v
	} else {
		cd.Detail = "not reachable: " + firstLine(err.Error())
	}
	return cd
}

// servePostgres opens the Postgres at url ("": none given) and says its
// schema version; it migrates nothing.
func servePostgres(ctx context.Context, url string, needed bool) Check {
	pg := Check{Name: "postgres", Needed: needed, Fix: "give --database-url of a running Postgres (not needed for up)"}
	if url == "" {
		pg.Detail = "no --database-url"
		return pg
	}
	st, err := store.Open(ctx, url, store.Options{ConnectTimeout: 3 * time.Second})
	if err != nil {
		pg.Detail = "not reachable: " + firstLine(err.Error())
		return pg
	}
	defer st.Close()
	v, _ := st.SchemaVersion(ctx)
	pg.OK, pg.Detail = true, fmt.Sprintf("reachable, schema %d", v)
	return pg
}

// What the host gives memohfs's watcher besides: other root processes
// (systemd, containerd, editors) hold some instances and watches too.
const otherInotifyWatches, otherInotifyInstances = 8192, 64

// inotify checks root's inotify limits against what serving `bots`
// bots takes: memohfs watches each bot's data dir with an instance of
// its own and up to fsnodes.WatchesPerBot watches. Short of them, bots'
// data/ is still right but served uncached where it is not watched
// (slower), so these warn rather than fail.
func inotify(bots int) []Check {
	bots = max(bots, 1)
	needW := min(int64(bots)*fsnodes.WatchesPerBot+otherInotifyWatches, math.MaxInt32)
	needI := min(int64(bots)+otherInotifyInstances, math.MaxInt32)
	one := func(name, key string, need int64, each string) Check {
		ch := Check{Name: "inotify " + name}
		b, err := os.ReadFile("/proc/sys/fs/inotify/" + key)
		cur, perr := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || perr != nil {
			ch.Detail = "cannot read fs.inotify." + key + ": bots' data/ is served uncached"
			ch.Fix = "a kernel with inotify (CONFIG_INOTIFY_USER)"
			return ch
		}
		ch.OK = cur >= need
		ch.Detail = fmt.Sprintf("%s=%d; %d bots need %d (%s)", key, cur, bots, need, each)
		ch.Fix = fmt.Sprintf("sysctl -w fs.inotify.%s=%d (and in /etc/sysctl.d to keep it)", key, need)
		return ch
	}
	return []Check{
		one("watches", "max_user_watches", needW, fmt.Sprintf("%d each", fsnodes.WatchesPerBot)),
		one("instances", "max_user_instances", needI, "1 each"),
	}
}

// binds says whether bots' data/ can be binds of their data dirs here
// (the new mount API and CAP_SYS_ADMIN): if not, memohfs serves data/
// through FUSE, which is right but slower, and the host's inotify hears
// nothing of what the bot writes. Not needed, so a warning.
func binds() Check {
	ch := Check{Name: "data/ binds",
		Fix: "run memohfs as root (CAP_SYS_ADMIN) on Linux 5.12 or later; until then data/ goes through FUSE " +
			"(slower, and host watchers miss the bot's writes)"}
	if err := mount.BindsUsable(); err != nil {
		ch.Detail = "FUSE only: " + err.Error()
		return ch
	}
	ch.OK, ch.Detail = true, "open_tree works: data/ can be a bind of the data dir"
	return ch
}

// lookBin fills in ch, whose Name is a program's: OK and its path if it
// is in PATH; else "not in PATH", and ch.Fix.
func lookBin(ch Check) Check {
	p, err := exec.LookPath(ch.Name)
	if err != nil {
		ch.Detail = "not in PATH"
		return ch
	}
	ch.OK, ch.Detail, ch.Fix = true, p, ""
	return ch
}

func firstLine(s string) string { return strings.SplitN(s, "\n", 2)[0] }
