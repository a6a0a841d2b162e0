package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/memohfs/memohfs/fsnodes"
	"github.com/memohfs/memohfs/internal/daemon"
	"github.com/memohfs/memohfs/internal/embedded"
	"github.com/memohfs/memohfs/mount"
	"github.com/memohfs/memohfs/runtime"
	"github.com/memohfs/memohfs/store"
	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"
)

// doctorCheck is one line of doctor's table.
type doctorCheck struct {
	Name   string
	OK     bool
	Needed bool // a failure makes doctor fail
	Detail string
	Fix    string
}

func doctorCommand() *cli.Command {
	return withConfig(&cli.Command{
		Name:  "doctor",
		Usage: "check what memohfs needs on this machine; prints a table with a fix for each failure",
		Flags: []cli.Flag{
			str("cni-bin-dir", "/usr/lib/cni:/opt/cni/bin", "CNI plugin dirs, colon separated"),
			str("containerd-address", "/run/containerd/containerd.sock", "containerd to check (serve)"),
			str("database-url", "", "Postgres to check (serve)"),
			str("containerd-bin", "", "dir with containerd binaries (up)"),
			boolf("serve", "also require the containerd and Postgres that `serve` connects to"),
			altsrc.NewIntFlag(&cli.IntFlag{Name: "bots", Value: 10, EnvVars: env("bots"),
				Usage: "how many bots this host serves at once (sizes the inotify checks)"}),
		},
		Action: doctorAction,
	})
}

// doctorOptions are what doctor checks against, from its flags.
type doctorOptions struct {
	CNIBinDir         string // colon separated, as --cni-bin-dir
	ContainerdAddress string // the containerd serve would connect to
	DatabaseURL       string // the Postgres serve would connect to ("": none given)
	ContainerdBin     string // where up would find containerd ("": next to memohfs, then PATH)
	RequireServe      bool   // the containerd and Postgres serve connects to are needed, not only wanted
	Bots              int    // how many bots this host serves at once
}

func doctorOptionsFrom(c *cli.Context) doctorOptions {
	return doctorOptions{
		CNIBinDir:         c.String("cni-bin-dir"),
		ContainerdAddress: c.String("containerd-address"),
		DatabaseURL:       c.String("database-url"),
		ContainerdBin:     c.String("containerd-bin"),
		RequireServe:      c.Bool("serve"),
		Bots:              c.Int("bots"),
	}
}

func doctorAction(c *cli.Context) error {
	checks := doctor(doctorOptionsFrom(c))
	w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "CHECK\tSTATUS\tDETAIL\tFIX")
	failed := 0
	for _, ch := range checks {
		status := "ok"
		if !ch.OK {
			status = "warn"
			if ch.Needed {
				status = "FAIL"
				failed++
			}
		}
		fix := ch.Fix
		if ch.OK {
			fix = ""
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", ch.Name, status, shorten(ch.Detail, 70), fix)
	}
	w.Flush()
	if failed > 0 {
		return cli.Exit(fmt.Sprintf("doctor: %d needed check(s) failed", failed), 1)
	}
	return nil
}

func doctor(o doctorOptions) []doctorCheck {
	var out []doctorCheck
	add := func(ch doctorCheck) { out = append(out, ch) }

	if f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0); err != nil {
		add(doctorCheck{Name: "/dev/fuse", Needed: true, Detail: err.Error(), Fix: "load the fuse module (modprobe fuse) or give the container /dev/fuse"})
	} else {
		f.Close()
		add(doctorCheck{Name: "/dev/fuse", OK: true, Needed: true, Detail: "opens"})
	}
	add(bindsCheck())
	add(lookBin(doctorCheck{Name: "fusermount3", Fix: "apt-get install fuse3 (needed to mount as a user; root mounts directly)"}))
	runc := lookBin(doctorCheck{Name: "runc", Needed: true, Fix: "apt-get install runc"})
	if runc.OK {
		if v, err := exec.Command("runc", "--version").Output(); err == nil {
			runc.Detail = strings.SplitN(string(v), "\n", 2)[0]
		}
	}
	add(runc)

	dirs := splitPath(o.CNIBinDir)
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
		add(doctorCheck{Name: "CNI plugins", Needed: true, Detail: "missing " + strings.Join(missing, ", ") + " in " + o.CNIBinDir,
			Fix: "apt-get install containernetworking-plugins (or --cni-bin-dir)"})
	} else {
		add(doctorCheck{Name: "CNI plugins", OK: true, Needed: true, Detail: "bridge, host-local, loopback"})
	}

	cg := doctorCheck{Name: "cgroups", Needed: true, Fix: "mount cgroups (v2 at /sys/fs/cgroup, or v1 with the freezer controller)"}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		cg.OK, cg.Detail = true, "v2 (unified)"
	} else if _, err := os.Stat("/sys/fs/cgroup/freezer"); err == nil {
		cg.OK, cg.Detail = true, "v1 with freezer (pause for live snapshots)"
	} else {
		cg.Detail = "no cgroup v2 and no v1 freezer"
	}
	add(cg)

	for _, ch := range inotifyChecks(o.Bots) {
		add(ch)
	}

	fsys, _ := os.ReadFile("/proc/filesystems")
	if strings.Contains(string(fsys), "\toverlay\n") {
		add(doctorCheck{Name: "overlay", OK: true, Needed: true, Detail: "in /proc/filesystems"})
	} else {
		add(doctorCheck{Name: "overlay", Needed: true, Detail: "overlay is not in /proc/filesystems", Fix: "modprobe overlay (or --snapshotter native)"})
	}

	// What `up` runs itself.
	if dir, err := daemon.FindBin(o.ContainerdBin, "containerd", "containerd-shim-runc-v2"); err == nil {
		v, _ := exec.Command(filepath.Join(dir, "containerd"), "--version").Output()
		add(doctorCheck{Name: "containerd (for up)", OK: true, Detail: strings.TrimSpace(string(v))})
	} else {
		add(doctorCheck{Name: "containerd (for up)", Detail: err.Error(), Fix: "make build (it copies them to bin/), or --containerd-bin"})
	}
	if dir, err := embedded.PostgresBinDir(); err == nil {
		v, _ := exec.Command(filepath.Join(dir, "postgres"), "--version").Output()
		add(doctorCheck{Name: "postgres (for up)", OK: true, Detail: strings.TrimSpace(string(v))})
	} else {
		add(doctorCheck{Name: "postgres (for up)", Detail: err.Error(), Fix: "apt-get install postgresql"})
	}

	// What `serve` connects to.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	rt, err := runtime.New(runtime.Config{Address: o.ContainerdAddress, StateDir: os.TempDir(),
		Network: runtime.NetworkConfig{PluginDirs: dirs, ConfDir: filepath.Join(os.TempDir(), "memohfs-doctor")}})
	cd := doctorCheck{Name: "containerd " + o.ContainerdAddress, Needed: o.RequireServe,
		Fix: "start containerd, or point --containerd-address at it (not needed for up)"}
	if err == nil {
		if v, verr := rt.Version(ctx); verr == nil {
			cd.OK, cd.Detail = true, "version "+v
		} else {
			cd.Detail = "not reachable: " + firstLine(verr.Error())
		}
		rt.Close()
	} else {
		cd.Detail = firstLine(err.Error())
	}
	add(cd)
	pg := doctorCheck{Name: "postgres", Needed: o.RequireServe, Fix: "give --database-url of a running Postgres (not needed for up)"}
	if o.DatabaseURL == "" {
		pg.Detail = "no --database-url"
	} else if st, err := store.Open(ctx, o.DatabaseURL, store.Options{ConnectTimeout: 3 * time.Second}); err != nil {
		pg.Detail = "not reachable: " + firstLine(err.Error())
	} else {
		v, _ := st.SchemaVersion(ctx)
		pg.OK, pg.Detail = true, fmt.Sprintf("reachable, schema %d", v)
		st.Close()
	}
	add(pg)
	return out
}

// What the host gives memohfs's watcher besides: other root processes
// (systemd, containerd, editors) hold some instances and watches too.
const otherInotifyWatches, otherInotifyInstances = 8192, 64

// inotifyChecks checks root's inotify limits against what serving
// `bots` bots takes: memohfs watches each bot's data dir with an
// instance of its own and up to fsnodes.WatchesPerBot watches. Short of
// them, bots' data/ is still right but served uncached where it is not
// watched (slower), so these warn rather than fail.
func inotifyChecks(bots int) []doctorCheck {
	bots = max(bots, 1)
	needW := min(int64(bots)*fsnodes.WatchesPerBot+otherInotifyWatches, math.MaxInt32)
	needI := min(int64(bots)+otherInotifyInstances, math.MaxInt32)
	one := func(name, key string, need int64, each string) doctorCheck {
		ch := doctorCheck{Name: "inotify " + name}
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
	return []doctorCheck{
		one("watches", "max_user_watches", needW, fmt.Sprintf("%d each", fsnodes.WatchesPerBot)),
		one("instances", "max_user_instances", needI, "1 each"),
	}
}

// bindsCheck says whether bots' data/ can be binds of their data dirs
// here (the new mount API and CAP_SYS_ADMIN): if not, memohfs serves
// data/ through FUSE, which is right but slower, and the host's inotify
// hears nothing of what the bot writes. Not needed, so a warning.
func bindsCheck() doctorCheck {
	ch := doctorCheck{Name: "data/ binds",
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
func lookBin(ch doctorCheck) doctorCheck {
	p, err := exec.LookPath(ch.Name)
	if err != nil {
		ch.Detail = "not in PATH"
		return ch
	}
	ch.OK, ch.Detail, ch.Fix = true, p, ""
	return ch
}

func firstLine(s string) string { return strings.SplitN(s, "\n", 2)[0] }

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
