package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/memohfs/memohfs/internal/embedded"
)

// endProcs ends ps by pid: SIGTERM to all of them, up to grace for them
// to go, then SIGKILL to those left. Each process's stamp (pid and start
// time) is checked before every signal, so a reused pid is never hit. It
// returns the processes that outlived SIGKILL (one blocked on a FUSE
// mount whose connection nobody aborted).
func endProcs(ps []tiedProc, grace time.Duration) []tiedProc {
	send := func(sig syscall.Signal) {
		for _, p := range ps {
			if pid, ok := p.stamp.Pid(); ok {
				syscall.Kill(pid, sig)
			}
		}
	}
	alive := func() []tiedProc {
		var out []tiedProc
		for _, p := range ps {
			if p.stamp.Alive() {
				out = append(out, p)
			}
		}
		return out
	}
	waitGone := func(d time.Duration) {
		for deadline := time.Now().Add(d); len(alive()) > 0 && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if len(ps) == 0 {
		return nil
	}
	send(syscall.SIGTERM)
	waitGone(grace)
	send(syscall.SIGKILL)
	waitGone(10 * time.Second)
	return alive()
}

// runIDRE is what newRunDir names a run dir: 3 random bytes in hex.
var runIDRE = regexp.MustCompile(`^[0-9a-f]{6}$`)

// runOf is the run a path under Root belongs to (the run dir's name), or
// "" for a path that names no run.
func runOf(path string) string {
	rest, ok := strings.CutPrefix(path, Root+"/")
	if !ok {
		return ""
	}
	id, _, _ := strings.Cut(rest, "/")
	if !runIDRE.MatchString(id) {
		return ""
	}
	return id
}

// runAlive reports whether run id's dir exists and its owner still runs.
func runAlive(id string) bool {
	return embedded.ReadStamp(filepath.Join(Root, id, "owner")).Alive()
}

// upRunDirsIn lists the socket dirs (/run/memohfs/<hash>) a command line
// names.
func upRunDirsIn(cmd string) []string {
	base := filepath.Dir(mustRunDir("/"))
	var out []string
	for _, arg := range strings.Fields(cmd) {
		if _, v, ok := strings.Cut(arg, "="); ok && strings.HasPrefix(v, "/") {
			arg = v
		}
		if rest, ok := strings.CutPrefix(arg, base+"/"); ok {
			if h, _, _ := strings.Cut(rest, "/"); h != "" {
				out = append(out, filepath.Join(base, h))
			}
		}
	}
	return out
}

func mustRunDir(state string) string {
	d, err := embedded.RunDir(state)
	if err != nil {
		panic(err) // only if the working dir is gone; state is absolute here
	}
	return d
}

// endOrphans ends every process tied to the test root (see tiedTo) whose
// run is not alive: its dir is gone (a teardown that removed it while a
// shim still ran, whose working dir is the deleted bundle) or its owner
// died. Then it removes the socket dirs of `memohfs up` instances those
// processes named, once no live process names them. Call it with the
// root lock held, after cleanRun of the dead runs that still have a dir.
func endOrphans() error {
	var dead []tiedProc
	for _, p := range tiedTo(Root) {
		if id := runOf(p.anchor); id != "" && !runAlive(id) {
			dead = append(dead, p)
		}
	}
	if len(dead) == 0 {
		return nil
	}
	fmt.Fprintf(os.Stderr, "testenv: ending %d processes of dead runs: %v\n", len(dead), dead)
	var errs []error
	if left := endProcs(dead, 5*time.Second); len(left) > 0 {
		errs = append(errs, fmt.Errorf("processes of dead runs outlived SIGKILL: %v", left))
	}
	seen := map[string]bool{}
	for _, p := range dead {
		for _, d := range upRunDirsIn(p.cmd) {
			if seen[d] {
				continue
			}
			seen[d] = true
			errs = append(errs, removeUpRunDir(d))
		}
	}
	return errors.Join(errs...)
}

// removeUpRunDir removes an up instance's socket dir once nothing runs
// that names it.
func removeUpRunDir(d string) error {
	if left := tiedTo(d); len(left) > 0 {
		return fmt.Errorf("%s still in use: %v", d, left)
	}
	unmountUnder(d)
	return os.RemoveAll(d)
}

// upRecord is a `memohfs up` instance a run's test registered
// (Env.UpInstance): its state dir and mount point, kept in <run dir>/up/<hash
// of the state dir> so that the run's teardown, or the next run if this
// one dies, finds the instance even once its state dir is gone.
type upRecord struct {
	file, state, mnt string
}

func upRecords(runDir string) []upRecord {
	files, _ := filepath.Glob(filepath.Join(runDir, "up", "*"))
	var out []upRecord
	for _, f := range files {
		b, err := os.ReadFile(f)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if err != nil || !filepath.IsAbs(lines[0]) {
			continue
		}
		r := upRecord{file: f, state: lines[0]}
		if len(lines) > 1 && filepath.IsAbs(lines[1]) {
			r.mnt = lines[1]
		}
		out = append(out, r)
	}
	return out
}
