package runtime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// procTree is every process a command started in a bot: containerd's
// exec kill reaches only the exec'd pid, and `sh -c 'sleep 1000 &'` or
// `npx` → `node` leave children that outlive it (reparented to the
// container's init when their parent exits).
//
// The tree gets its own cgroup below the container's (in the freezer
// hierarchy on cgroup v1, the unified one on v2): every process forked
// in it stays in it, whatever it does to its env, session or parent.
// What forked before the exec'd process was moved there is found by
// adopt: descendants of the exec'd pid, and processes carrying the
// command's marker in their env (MEMOHFS_EXEC, which children inherit;
// one that clears its env and double-forks in the first moments, before
// adopt ran, escapes, and is then still ended with the bot).
//
// runc's kill --all and delete walk the container's cgroups
// recursively, so a stop of the bot still ends the tree.
type procTree struct {
	parent *freezer // the container's cgroup
	cg     *freezer // the tree's own, below it
	marker string   // MEMOHFS_EXEC=<container>/<exec id>
	root   int      // the exec'd pid, on the host
}

// cgroupPrefix starts the names of the trees' cgroups.
const cgroupPrefix = "memohfs-exec-"

func newProcTree(parent *freezer, id, marker string, root int) *procTree {
	return &procTree{parent: parent, cg: &freezer{v2: parent.v2, path: filepath.Join(parent.path, cgroupPrefix+id)},
		marker: marker, root: root}
}

// adopt moves the tree's processes still in the container's cgroup into
// the tree's, until a pass finds none.
func (t *procTree) adopt() error {
	if err := os.Mkdir(t.cg.path, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	for pass := 0; pass < 16; pass++ {
		moved, err := t.adoptPass()
		if err != nil || moved == 0 {
			return err
		}
	}
	return nil
}

func (t *procTree) adoptPass() (int, error) {
	outside, err := readPids(filepath.Join(t.parent.path, "cgroup.procs"))
	if err != nil {
		return 0, err
	}
	inside, err := readPids(filepath.Join(t.cg.path, "cgroup.procs"))
	if err != nil {
		return 0, err
	}
	ours := map[int]bool{t.root: true}
	for _, p := range inside {
		ours[p] = true
	}
	parents := map[int]int{}
	for _, p := range outside {
		parents[p] = ppidOf(p)
	}
	belongs := func(p int) bool {
		for q, steps := p, 0; q > 1 && steps < 64; q, steps = parents[q], steps+1 {
			if ours[q] {
				return true
			}
			if _, known := parents[q]; !known {
				break
			}
		}
		return hasEnv(p, t.marker)
	}
	moved := 0
	for _, p := range outside {
		if !belongs(p) {
			continue
		}
		err := os.WriteFile(filepath.Join(t.cg.path, "cgroup.procs"), []byte(strconv.Itoa(p)), 0)
		if err != nil && !errors.Is(err, syscall.ESRCH) {
			return moved, fmt.Errorf("move pid %d into %s: %w", p, t.cg.path, err)
		}
		if err == nil {
			moved++
		}
	}
	return moved, nil
}

// signal sends sig to every process of the tree. Each is pinned by a
// pidfd and checked to be in the tree's cgroup before the signal: a pid
// that ended and was reused meanwhile is not signalled. The tree is not
// frozen for it (a freeze a crash left in place would keep the bot's
// stop from ever ending it); a process forked in the instant of a
// signal may miss it, which end's repeated SIGKILL covers.
func (t *procTree) signal(ctx context.Context, sig syscall.Signal) error {
	if _, err := os.Stat(t.cg.path); err != nil {
		return nil // ended and removed
	}
	if err := t.adopt(); err != nil {
		return err
	}
	pids, err := readPids(filepath.Join(t.cg.path, "cgroup.procs"))
	for _, p := range pids {
		if kerr := t.signalOne(p, sig); kerr != nil {
			err = errors.Join(err, fmt.Errorf("signal pid %d: %w", p, kerr))
		}
	}
	return err
}

func (t *procTree) signalOne(pid int, sig syscall.Signal) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if err == unix.ESRCH {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil || !bytes.Contains(b, []byte("/"+filepath.Base(t.cg.path)+"\n")) {
		return nil // gone, or no longer ours
	}
	if err := unix.PidfdSendSignal(fd, sig, nil, 0); err != nil && err != unix.ESRCH {
		return err
	}
	return nil
}

// alive says whether a process of the tree is left.
func (t *procTree) alive() bool {
	pids, err := readPids(filepath.Join(t.cg.path, "cgroup.procs"))
	return err == nil && len(pids) > 0
}

// end kills what is left of the tree, waits for it to be gone, and
// removes its cgroup.
func (t *procTree) end(ctx context.Context) error {
	if _, err := os.Stat(t.cg.path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	deadline := time.Now().Add(killTimeout)
	for wait := 100 * time.Microsecond; t.alive(); wait = min(2*wait, 20*time.Millisecond) {
		if err := t.signal(ctx, syscall.SIGKILL); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("exec tree %s: processes left %s after SIGKILL", t.cg.path, killTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
	if err := os.Remove(t.cg.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove exec cgroup: %w", err)
	}
	return nil
}

// readPids reads a cgroup.procs file.
func readPids(path string) ([]int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if p, err := strconv.Atoi(f); err == nil {
			out = append(out, p)
		}
	}
	return out, nil
}

// ppidOf reads a process's parent from /proc (0 when gone).
func ppidOf(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// pid (comm) state ppid ...: comm may hold anything, ")" last.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0
	}
	p, _ := strconv.Atoi(f[1])
	return p
}

// envLimit bounds how much of a process's env is read.
const envLimit = 1 << 20

// hasEnv says whether the process's env holds kv exactly.
func hasEnv(pid int, kv string) bool {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return false
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, envLimit))
	for _, e := range bytes.Split(b, []byte{0}) {
		if string(e) == kv {
			return true
		}
	}
	return false
}
