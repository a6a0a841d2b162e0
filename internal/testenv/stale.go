package testenv

import (
	"errors"
	"fmt"
	"github.com/memohfs/memohfs/internal/embedded"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// cleanStale tears down what runs that died left behind: their daemons
// (started again over their state if needed, so their tasks can be
// stopped through the API), the `memohfs up` instances their tests
// registered, CNI leases, netns files, mounts, postmasters, bridges,
// directories; then, by pid, every process tied to the test root whose
// run is not alive (endOrphans); then ip_forward if no run is left.
func cleanStale() {
	unlock, err := lockRoot()
	if err != nil {
		fmt.Fprintf(os.Stderr, "testenv: stale cleanup: %v\n", err)
		return
	}
	defer unlock()
	cleanStaleLocked()
}

// cleanStaleLocked is cleanStale with the root lock held.
func cleanStaleLocked() {
	entries, _ := os.ReadDir(Root)
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(Root, e.Name())
		if embedded.ReadStamp(filepath.Join(dir, "owner")).Alive() {
			continue
		}
		fmt.Fprintf(os.Stderr, "testenv: cleaning up after a dead run in %s\n", dir)
		if err := cleanRun(dir); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: %s: %v\n", dir, err)
		}
	}
	if err := endOrphans(); err != nil {
		fmt.Fprintf(os.Stderr, "testenv: %v\n", err)
	}
	if err := restoreIPForward(os.Getpid()); err != nil {
		fmt.Fprintf(os.Stderr, "testenv: %v\n", err)
	}
}

func cleanRun(dir string) error {
	// A FUSE server of the run may be wedged (or dead with a caller
	// stuck on it): abort every connection first, so that nothing below
	// blocks on it and every process can be ended.
	for _, m := range fuseMountsUnder(dir) {
		AbortFUSE(m)
	}
	var n NetInfo
	if b, err := os.ReadFile(filepath.Join(dir, "net")); err == nil {
		if f := strings.Fields(string(b)); len(f) == 3 {
			n = NetInfo{Subnet: f[0], Bridge: f[1], Name: f[2], PluginDirs: []string{"/usr/lib/cni", "/opt/cni/bin"},
				ConfDir: filepath.Join(dir, "cni", "net.d"), IPAMDir: filepath.Join(dir, "cni", "ipam")}
		}
	}
	ctrdDir := filepath.Join(dir, "ctrd")
	if _, err := os.Stat(filepath.Join(ctrdDir, "config.toml")); err == nil {
		// Adopted if it still runs, started again over its state if not:
		// either way its tasks can then be stopped through the API.
		bin, err := ContainerdBinDir()
		if err != nil {
			return err
		}
		c, err := launchContainerd(ctrdDir, bin)
		if err != nil {
			return fmt.Errorf("restart its containerd: %w", err)
		}
		if err := c.sweepAll(n); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: sweep %s: %v\n", dir, err)
		}
		if err := c.stop(); err != nil {
			return err
		}
	}
	// Whole memohfs instances (`up`) its tests registered, and any other
	// state dir of one under t/.
	states := map[string]string{} // state dir -> mount point
	confs, _ := filepath.Glob(filepath.Join(dir, "t", "*", "*", "containerd", "config.toml"))
	for _, conf := range confs {
		states[filepath.Dir(filepath.Dir(conf))] = ""
	}
	for _, r := range upRecords(dir) {
		states[r.state] = r.mnt
	}
	for state, mnt := range states {
		if err := CleanupStateDir(state, mnt); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: clean up %s: %v\n", state, err)
		}
	}
	// Postmasters: the run's own and any test cluster under t/.
	pids, _ := filepath.Glob(filepath.Join(dir, "pg", "postgres.pid"))
	more, _ := filepath.Glob(filepath.Join(dir, "t", "*", "pg", "postgres.pid"))
	for _, p := range append(pids, more...) {
		embedded.ReadStamp(p).Terminate(syscall.SIGINT, 20*time.Second)
	}
	// Whatever of the run still runs: by pid.
	if left := endProcs(tiedTo(dir), 5*time.Second); len(left) > 0 {
		return fmt.Errorf("processes of the run outlived SIGKILL: %v", left)
	}
	unmountUnder(dir)
	if n.Bridge != "" {
		if err := deleteLink(n.Bridge); err != nil {
			return err
		}
		removeCNICache(n.Name)
	}
	return os.RemoveAll(dir)
}

// removeRunDir is the last step of a run's own teardown: the up
// instances its tests registered and did not clean up (a test that
// panicked), then anything still tied to the run dir, are ended, and
// reported: a clean run has nothing left by then.
func removeRunDir(dir string) error {
	var errs []error
	for _, r := range upRecords(dir) {
		if err := CleanupStateDir(r.state, r.mnt); err != nil {
			errs = append(errs, fmt.Errorf("up instance %s: %w", r.state, err))
		}
	}
	if left := tiedTo(dir); len(left) > 0 {
		errs = append(errs, fmt.Errorf("processes of the run still alive, ended by pid: %v", left))
		if left := endProcs(left, 5*time.Second); len(left) > 0 {
			return errors.Join(append(errs, fmt.Errorf("outlived SIGKILL: %v", left))...)
		}
	}
	unmountUnder(dir)
	if left := mountsUnder(dir); len(left) > 0 {
		return errors.Join(append(errs, fmt.Errorf("mounts left under %s: %v", dir, left))...)
	}
	return errors.Join(append(errs, os.RemoveAll(dir))...)
}
