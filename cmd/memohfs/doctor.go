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

// check is one line of doctor's table.
type check struct {
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
		Action: func(c *cli.Context) error {
			checks := doctor(c)
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
		},
	})
}

func doctor(c *cli.Context) []check {
	var out []check
	add := func(ch check) { out = append(out, ch) }

	if f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0); err != nil {
		add(check{"/dev/fuse", false, true, err.Error(), "load the fuse module (modprobe fuse) or give the container /dev/fuse"})
	} else {
		f.Close()
		add(check{"/dev/fuse", true, true, "opens", ""})
	}
	add(bindsCheck())
	add(lookBin("fusermount3", false, "apt-get install fuse3 (needed to mount as a user; root mounts directly)"))
	runc := lookBin("runc", true, "apt-get install runc")
	if runc.OK {
		if v, err := exec.Command("runc", "--version").Output(); err == nil {
			runc.Detail = strings.SplitN(string(v), "\n", 2)[0]
		}
	}
	add(runc)

	dirs := splitPath(c.String("cni-bin-dir"))
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
		add(check{"CNI plugins", false, true, "missing " + strings.Join(missing, ", ") + " in " + c.String("cni-bin-dir"),
			"apt-get install containernetworking-plugins (or --cni-bin-dir)"})
	} else {
		add(check{"CNI plugins", true, true, "bridge, host-local, loopback", ""})
	}

	cg := check{Name: "cgroups", Needed: true, Fix: "mount cgroups (v2 at /sys/fs/cgroup, or v1 with the freezer controller)"}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		cg.OK, cg.Detail = true, "v2 (unified)"
	} else if _, err := os.Stat("/sys/fs/cgroup/freezer"); err == nil {
		cg.OK, cg.Detail = true, "v1 with freezer (pause for live snapshots)"
	} else {
		cg.Detail = "no cgroup v2 and no v1 freezer"
	}
	add(cg)

	for _, ch := range inotifyChecks(c.Int("bots")) {
		add(ch)
	}

	fsys, _ := os.ReadFile("/proc/filesystems")
	if strings.Contains(string(fsys), "\toverlay\n") {
		add(check{"overlay", true, true, "in /proc/filesystems", ""})
	} else {
		add(check{"overlay", false, true, "overlay is not in /proc/filesystems", "modprobe overlay (or --snapshotter native)"})
	}

	// What `up` runs itself.
	if dir, err := daemon.FindBin(c.String("containerd-bin"), "containerd", "containerd-shim-runc-v2"); err == nil {
		v, _ := exec.Command(filepath.Join(dir, "containerd"), "--version").Output()
		add(check{"containerd (for up)", true, false, strings.TrimSpace(string(v)), ""})
	} else {
		add(check{"containerd (for up)", false, false, err.Error(), "make build (it copies them to bin/), or --containerd-bin"})
	}
	if dir, err := embedded.PostgresBinDir(); err == nil {
		v, _ := exec.Command(filepath.Join(dir, "postgres"), "--version").Output()
		add(check{"postgres (for up)", true, false, strings.TrimSpace(string(v)), ""})
	} else {
		add(check{"postgres (for up)", false, false, err.Error(), "apt-get install postgresql"})
	}

	// What `serve` connects to.
	needServe := c.Bool("serve")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	rt, err := runtime.New(runtime.Config{Address: c.String("containerd-address"), StateDir: os.TempDir(),
		Network: runtime.NetworkConfig{PluginDirs: dirs, ConfDir: filepath.Join(os.TempDir(), "memohfs-doctor")}})
	cd := check{Name: "containerd " + c.String("containerd-address"), Needed: needServe,
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
	pg := check{Name: "postgres", Needed: needServe, Fix: "give --database-url of a running Postgres (not needed for up)"}
	if url := c.String("database-url"); url == "" {
		pg.Detail = "no --database-url"
	} else if st, err := store.Open(ctx, url, store.Options{ConnectTimeout: 3 * time.Second}); err != nil {
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

// inotifyChecks checks root's inotify limits against what serving bots
// bots takes: memohfs watches each bot's data dir with an instance of its
// own and up to fsnodes.WatchesPerBot watches. Short of them, bots' data/
// is still right but served uncached where it is not watched (slower),
// so these warn rather than fail.
func inotifyChecks(bots int) []check {
	bots = max(bots, 1)
	needW := min(int64(bots)*fsnodes.WatchesPerBot+otherInotifyWatches, math.MaxInt32)
	needI := min(int64(bots)+otherInotifyInstances, math.MaxInt32)
	one := func(name, key string, need int64, each string) check {
		ch := check{Name: "inotify " + name}
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
	return []check{
		one("watches", "max_user_watches", needW, fmt.Sprintf("%d each", fsnodes.WatchesPerBot)),
		one("instances", "max_user_instances", needI, "1 each"),
	}
}

// bindsCheck says whether bots' data/ can be binds of their data dirs
// here (the new mount API and CAP_SYS_ADMIN): if not, memohfs serves
// data/ through FUSE, which is right but slower, and the host's inotify
// hears nothing of what the bot writes. Not needed, so a warning.
func bindsCheck() check {
	ch := check{Name: "data/ binds",
		Fix: "run memohfs as root (CAP_SYS_ADMIN) on Linux 5.12 or later; until then data/ goes through FUSE " +
			"(slower, and host watchers miss the bot's writes)"}
	if err := mount.BindsUsable(); err != nil {
		ch.Detail = "FUSE only: " + err.Error()
		return ch
	}
	ch.OK, ch.Detail = true, "open_tree works: data/ can be a bind of the data dir"
	return ch
}

func lookBin(name string, needed bool, fix string) check {
	p, err := exec.LookPath(name)
	if err != nil {
		return check{name, false, needed, "not in PATH", fix}
	}
	return check{name, true, needed, p, ""}
}

func firstLine(s string) string { return strings.SplitN(s, "\n", 2)[0] }

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
