package control

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/memohfs/memohfs/mount"
	"golang.org/x/sys/unix"
)

// The check of the binds a mount makes (CheckOutside with a mount). It is
// here, not in mount, because it is about bots: where each bot's data dir
// and snapshot copies are under the data root, what the status files say
// (data-path) and which binds a served bot must have; mount only lists
// the mounts (mountinfo) it compares with.

// bindProblems checks the binds under mnt (whose data root is dataRoot)
// against the bots' status files:
//   - a bot whose status says `data-path bind` has exactly one mount on
//     mnt/<bot>/data, whose root is the bot's data dir (st_dev and st_ino
//     of dataRoot/bots/<bot>, opened without following a link) and which
//     has nosymfollow, nodev and nosuid; a bot whose status says fuse,
//     and a name the mount does not serve, has none;
//   - a snapshot view bound (mnt/<bot>/snapshots/<snap>/data or rootfs,
//     bound once the snapshot is looked up) is one mount, of a snapshot
//     the bot has, of a bot on binds, read-only with the same flags; a
//     data view shows the snapshot's copy (dataRoot/snapshots/<bot>/<snap>/data);
//   - nothing else is mounted under mnt.
//
// It reads mountinfo, the status files and the snapshots/ listings, and
// stats the mount points; it changes nothing.
func bindProblems(mnt, dataRoot string) ([]string, error) {
	mnt, err := filepath.Abs(mnt)
	if err != nil {
		return nil, err
	}
	// mountinfo names mount points with no symlink in them; the mount
	// point's own parents are the admin's, not a bot's.
	parent, err := filepath.EvalSymlinks(filepath.Dir(mnt))
	if err != nil {
		return nil, err
	}
	mnt = filepath.Join(parent, filepath.Base(mnt))
	subs, err := mount.Submounts(mnt)
	if err != nil {
		return nil, fmt.Errorf("check: mountinfo: %w", err)
	}
	on := map[string][]mount.MountInfo{}    // bot name -> the mounts on its data/
	views := map[string][]mount.MountInfo{} // bot/snapshots/snap/view -> the mounts there
	var problems []string
	problem := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	for _, m := range subs {
		rel, ok := strings.CutPrefix(m.MountPoint, mnt+"/")
		if !ok {
			continue // the mount itself
		}
		switch p := strings.Split(rel, "/"); {
		case len(p) == 2 && p[1] == "data":
			on[p[0]] = append(on[p[0]], m)
		case len(p) == 4 && p[1] == "snapshots" && (p[3] == "data" || p[3] == "rootfs"):
			views[rel] = append(views[rel], m)
		default:
			problem("a mount memohfs does not make: %s on %s (root %s)", m.FSType, m.MountPoint, m.Root)
		}
	}
	entries, err := os.ReadDir(mnt)
	if err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	served := map[string]string{} // bot -> its data-path
	for _, e := range entries {
		name := e.Name()
		served[name] = ""
		b, err := os.ReadFile(filepath.Join(mnt, name, "status"))
		if err != nil {
			continue // the control check reports a bot it cannot read
		}
		path := statusValue(string(b), "data-path")
		served[name] = path
		target := filepath.Join(mnt, name, "data")
		ms := on[name]
		switch path {
		case "bind":
			if len(ms) == 0 {
				problem("bot %s: data/ bind is missing: status says data-path bind, nothing is mounted on %s", name, target)
				break
			}
			if len(ms) > 1 {
				problem("bot %s: data/ bind: %d mounts on %s (roots %s), want one", name, len(ms), target, mountRoots(ms))
			}
			checkBind(bindSpec{what: "bot " + name + ": data/ bind", target: target,
				dir: filepath.Join(dataRoot, "bots", name), dirName: "the data dir", opts: dataBindOpts}, ms, problem)
		case "fuse":
			if len(ms) > 0 {
				problem("bot %s: data/ bind: status says data-path fuse, but %d mount(s) on %s (roots %s)",
					name, len(ms), target, mountRoots(ms))
			}
		}
	}
	for name, ms := range on {
		if _, ok := served[name]; !ok {
			problem("bot %s: data/ bind: %d mount(s) on %s, a bot the mount does not serve", name, len(ms), filepath.Join(mnt, name, "data"))
		}
	}
	snaps := map[string]map[string]bool{} // bot -> its snapshots, listed once
	for rel, ms := range views {
		p := strings.Split(rel, "/")
		bot, snap, view := p[0], p[2], p[3]
		target := filepath.Join(mnt, rel)
		what := "bot " + bot + ": snapshot " + snap + "'s " + view + "/ view"
		path, ok := served[bot]
		switch {
		case !ok:
			problem("%s: %d mount(s) on %s, a bot the mount does not serve", what, len(ms), target)
			continue
		case path == "fuse":
			problem("%s: status says data-path fuse, but %d mount(s) on %s (roots %s)", what, len(ms), target, mountRoots(ms))
			continue
		}
		if snaps[bot] == nil {
			snaps[bot] = map[string]bool{}
			list, _ := os.ReadDir(filepath.Join(mnt, bot, "snapshots"))
			for _, e := range list {
				snaps[bot][e.Name()] = true
			}
		}
		if !snaps[bot][snap] {
			problem("%s: %d mount(s) on %s, a snapshot the bot does not have", what, len(ms), target)
			continue
		}
		if len(ms) > 1 {
			problem("%s: %d mounts on %s (roots %s), want one", what, len(ms), target, mountRoots(ms))
		}
		spec := bindSpec{what: what, target: target, opts: viewBindOpts}
		if view == "data" {
			spec.dir, spec.dirName = filepath.Join(dataRoot, "snapshots", bot, snap, "data"), "the snapshot's copy"
		}
		checkBind(spec, ms, problem)
	}
	return problems, nil
}

// The options each kind of bind must have (mount.BindFlags, and
// read-only for a snapshot's views).
var (
	dataBindOpts = []string{"nosymfollow", "nodev", "nosuid"}
	viewBindOpts = []string{"ro", "nosymfollow", "nodev", "nosuid"}
)

// bindSpec is what one bind memohfs makes must be.
type bindSpec struct {
	what    string // "bot a: data/ bind": how problems name it
	target  string // where it is mounted
	dir     string // the host dir it must show ("": not checked)
	dirName string // what dir is ("the data dir")
	opts    []string
}

// checkBind checks the mount that s.target reaches, one of ms (the
// mounts on it): its root is s.dir, and it has s.opts.
func checkBind(s bindSpec, ms []mount.MountInfo, problem func(string, ...any)) {
	var want unix.Stat_t
	if s.dir != "" {
		var err error
		if want, err = statNoFollow(s.dir); err != nil {
			problem("%s: cannot open %s %s: %v", s.what, s.dirName, s.dir, err)
			return
		}
	}
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, s.target, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_INO|unix.STATX_MNT_ID, &stx); err != nil {
		problem("%s: stat %s: %v", s.what, s.target, err)
		return
	}
	var m *mount.MountInfo
	for i := range ms {
		if uint64(ms[i].ID) == stx.Mnt_id {
			m = &ms[i]
		}
	}
	if m == nil {
		problem("%s: %s reaches mount %d, mountinfo lists %s there (did it change while checked?)",
			s.what, s.target, stx.Mnt_id, mountIDs(ms))
		return
	}
	if dev := unix.Mkdev(stx.Dev_major, stx.Dev_minor); s.dir != "" && (dev != want.Dev || stx.Ino != want.Ino) {
		problem("%s shows another dir (root %s, dev %d:%d ino %d), not %s %s (dev %d:%d ino %d)",
			s.what, m.Root, stx.Dev_major, stx.Dev_minor, stx.Ino, s.dirName, s.dir, unix.Major(want.Dev), unix.Minor(want.Dev), want.Ino)
	}
	var lacks []string
	for _, o := range s.opts {
		if !m.HasOptions(o) {
			lacks = append(lacks, o)
		}
	}
	if len(lacks) > 0 {
		problem("%s on %s lacks %s (options %s)", s.what, s.target, strings.Join(lacks, ", "), strings.Join(m.Options, ","))
	}
}

// statNoFollow stats dir (a bot's data dir, or a snapshot's data copy),
// opened from its parent, following a link neither at the parent's name
// nor at the dir's: what a bind shows is compared with the dir itself,
// never with where a link put there leads.
func statNoFollow(dir string) (unix.Stat_t, error) {
	var st unix.Stat_t
	parent, err := unix.Open(filepath.Dir(dir), unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return st, err
	}
	defer unix.Close(parent)
	fd, err := unix.Openat(parent, filepath.Base(dir), unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return st, err
	}
	defer unix.Close(fd)
	err = unix.Fstat(fd, &st)
	return st, err
}

// statusValue is the value of key in a status file ("" if it has none).
func statusValue(status, key string) string {
	for _, l := range strings.Split(status, "\n") {
		if k, v, ok := strings.Cut(l, " "); ok && k == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func mountIDs(ms []mount.MountInfo) string {
	var s []string
	for _, m := range ms {
		s = append(s, strconv.Itoa(m.ID))
	}
	return strings.Join(s, ", ")
}

func mountRoots(ms []mount.MountInfo) string {
	var rs []string
	for _, m := range ms {
		rs = append(rs, m.Root)
	}
	return strings.Join(rs, ", ")
}
