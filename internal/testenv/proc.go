package testenv

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/memohfs/memohfs/internal/embedded"
)

// procInfo is one live process as /proc shows it.
type procInfo struct {
	pid, ppid int
	stamp     embedded.Stamp
	cmd       string // the command line, arguments joined by spaces
	cwd       string // the working dir, " (deleted)" cut off
	exe       string // the executable, " (deleted)" cut off
}

func (p procInfo) String() string { return fmt.Sprintf("%d: %s (cwd %s)", p.pid, p.cmd, p.cwd) }

// listProcs lists every live process but this one (zombies and kernel
// threads, which have no command line, left out).
func listProcs() []procInfo {
	entries, _ := os.ReadDir("/proc")
	var out []procInfo
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		p := procInfo{pid: pid, stamp: embedded.StampOf(pid)}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || len(b) == 0 || !p.stamp.Alive() {
			continue
		}
		p.cmd = strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " ")
		if st, err := os.ReadFile("/proc/" + e.Name() + "/stat"); err == nil {
			if i := strings.LastIndexByte(string(st), ')'); i >= 0 {
				if f := strings.Fields(string(st[i+1:])); len(f) > 1 {
					p.ppid, _ = strconv.Atoi(f[1])
				}
			}
		}
		p.cwd = linkTarget("/proc/" + e.Name() + "/cwd")
		p.exe = linkTarget("/proc/" + e.Name() + "/exe")
		out = append(out, p)
	}
	return out
}

func linkTarget(link string) string {
	s, err := os.Readlink(link)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(s, " (deleted)")
}

// under reports whether path is dir or below it.
func under(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// tiedProc is a process tied to something a test made, and how it was
// found.
type tiedProc struct {
	procInfo
	why    string
	anchor string // the path that ties it (its tied ancestor's, for a descendant)
}

func (p tiedProc) String() string { return fmt.Sprintf("%s [%s]", p.procInfo, p.why) }

// tiedTo lists the processes tied to dirs: whose command line names
// something under one of them, whose working dir (deleted or not) or
// executable is under one, and every descendant of such a process (a
// container's processes run under their shim and name nothing of the
// host; a postmaster's backends rewrite their command lines). A shim
// whose containerd is gone and whose bundle was deleted is still found:
// its working dir is the bundle.
func tiedTo(dirs ...string) []tiedProc {
	procs := listProcs()
	why, anchor := map[int]string{}, map[int]string{}
	for _, p := range procs {
		for _, d := range dirs {
			if w, a := tie(p, d); w != "" {
				why[p.pid], anchor[p.pid] = w, a
				break
			}
		}
	}
	parent := map[int]int{}
	for _, p := range procs {
		parent[p.pid] = p.ppid
	}
	// Never this process's own ancestors (a `go test` started from a
	// dir under the root, say).
	ancestors := map[int]bool{}
	for a, n := os.Getppid(), 0; a > 1 && n < len(procs); a, n = parent[a], n+1 {
		ancestors[a] = true
	}
	var out []tiedProc
	for _, p := range procs {
		w, ok := why[p.pid]
		an := anchor[p.pid]
		// Walk up to the first tied ancestor (a bounded walk: pids can
		// be reused, a chain cannot be longer than the table).
		for a, n := parent[p.pid], 0; !ok && a > 1 && n < len(procs); a, n = parent[a], n+1 {
			if aw, tied := why[a]; tied {
				w, an, ok = fmt.Sprintf("descendant of %d, %s", a, aw), anchor[a], true
			}
		}
		if ok && !ancestors[p.pid] {
			out = append(out, tiedProc{p, w, an})
		}
	}
	return out
}

// tie says how p is tied to dir, and by which path, or "" if it is not.
func tie(p procInfo, dir string) (why, anchor string) {
	if a := named(p.cmd, dir); a != "" {
		return "command line names " + a, a
	}
	if under(p.cwd, dir) {
		return "working dir " + p.cwd, p.cwd
	}
	if under(p.exe, dir) {
		return "runs " + p.exe, p.exe
	}
	return "", ""
}

// named finds dir or something below it in a command line: dir starting
// an argument (or the value of a --flag=), followed by a slash, a space
// or the end. It returns that argument, or "".
func named(cmd, dir string) string {
	for i := 0; ; {
		j := strings.Index(cmd[i:], dir)
		if j < 0 {
			return ""
		}
		at, end := i+j, i+j+len(dir)
		startOK := at == 0 || cmd[at-1] == ' ' || cmd[at-1] == '='
		endOK := end == len(cmd) || cmd[end] == '/' || cmd[end] == ' '
		if startOK && endOK {
			arg, _, _ := strings.Cut(cmd[at:], " ")
			return arg
		}
		i = at + 1
	}
}

// procsMentioning lists processes whose command line names something under
// dir: daemons, shims and postmasters of a run all do.
func procsMentioning(dir string) []string {
	var out []string
	for _, p := range listProcs() {
		if strings.Contains(p.cmd, dir+"/") {
			out = append(out, fmt.Sprintf("%d: %s", p.pid, p.cmd))
		}
	}
	return out
}

// ProcsMentioning lists live processes whose command line names something
// under dir.
func ProcsMentioning(dir string) []string { return procsMentioning(dir) }

// ProcsTiedTo lists live processes tied to any of dirs: by command line,
// working dir (deleted or not), executable, or as a descendant of one
// (see tiedTo).
func ProcsTiedTo(dirs ...string) []string {
	var out []string
	for _, p := range tiedTo(dirs...) {
		out = append(out, p.String())
	}
	return out
}
