package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/memohfs/memohfs/internal/embedded"
)

// UpInstance gives the test a state dir and a mount point for a whole
// memohfs (`memohfs up --state-dir state --mount mnt`), under the run dir,
// and records the instance in the run dir (up/<hash>) so that whatever it
// leaves is found and ended: by the test's cleanup (CleanupStateDir, an
// error if it had to end something by pid), by the run's teardown, or by
// the next run if this one dies first. The instance's sockets live in its
// own dir under /run/memohfs (embedded.RunDir), which the record names.
func (e *Env) UpInstance(t testing.TB) (state, mnt string) {
	t.Helper()
	dir := e.TempDir(t)
	state, mnt = filepath.Join(dir, "state"), filepath.Join(dir, "mnt")
	runDir, err := embedded.RunDir(state)
	if err != nil {
		t.Fatal(err)
	}
	rec := filepath.Join(e.Dir, "up", filepath.Base(runDir))
	if err := os.MkdirAll(filepath.Dir(rec), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rec, []byte(state+"\n"+mnt+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Registered after TempDir's: runs before the dir is removed.
	t.Cleanup(func() {
		if err := CleanupStateDir(state, mnt); err != nil {
			t.Errorf("up instance %s: %v", state, err)
			return
		}
		os.Remove(rec)
	})
	return state, mnt
}

// CleanupStateDir tears down what a whole memohfs (`memohfs up`) left
// under stateDir, whatever state it died in, and its socket dir
// (embedded.RunDir): the mount (its FUSE connection aborted, so nothing
// blocks on a dead server), the memohfs processes still serving it (told
// to stop, they stop what they started), every task and container in its
// containerd (started again over its state if it is not running), the
// daemon, its Postgres; then, by pid, anything still tied to the state or
// socket dir (see tiedTo: a shim containerd lost, with its container). It
// works on what is left when stateDir itself is gone. Processes are only
// signalled through pid files or as tied to the instance's own dirs. It
// returns an error naming what had to be ended by pid: containerd and
// Postgres should have ended everything.
func CleanupStateDir(stateDir, mnt string) error {
	var errs []error
	runDir, err := embedded.RunDir(stateDir)
	if err != nil {
		return err
	}
	if mnt != "" {
		for _, m := range fuseMountsUnder(mnt) {
			AbortFUSE(m)
		}
	}
	var daemons []tiedProc
	for _, p := range listProcs() {
		if strings.Contains(p.cmd+" ", " --state-dir "+stateDir+" ") || strings.Contains(p.cmd+" ", " --state-dir="+stateDir+" ") {
			daemons = append(daemons, tiedProc{p, "memohfs of " + stateDir, stateDir})
		}
	}
	if left := endProcs(daemons, 60*time.Second); len(left) > 0 {
		errs = append(errs, fmt.Errorf("memohfs of %s outlived SIGKILL: %v", stateDir, left))
	}
	ctrdDir := filepath.Join(stateDir, "containerd")
	if _, err := os.Stat(filepath.Join(ctrdDir, "config.toml")); err == nil {
		bin, err := ContainerdBinDir()
		var cfg embedded.ContainerdConfig
		if err == nil {
			cfg, err = embedded.LoadContainerdConfig(ctrdDir, bin)
		}
		if err == nil {
			var c *embedded.Containerd
			c, err = embedded.StartContainerd(context.Background(), cfg)
			if err == nil {
				tc := &Containerd{Containerd: c, sharedCgroups: true}
				errs = append(errs, tc.sweepAll(stateNet(stateDir)), tc.stop())
			}
		}
		errs = append(errs, err)
	}
	embedded.ReadStamp(filepath.Join(stateDir, "postgres", "postgres.pid")).Terminate(syscall.SIGINT, 20*time.Second)
	if left := tiedTo(stateDir, runDir); len(left) > 0 {
		errs = append(errs, fmt.Errorf("processes neither containerd nor Postgres ended, ended by pid: %v", left))
		if left := endProcs(left, 5*time.Second); len(left) > 0 {
			errs = append(errs, fmt.Errorf("outlived SIGKILL: %v", left))
		}
	}
	unmountUnder(stateDir)
	errs = append(errs, removeUpRunDir(runDir))
	return errors.Join(errs...)
}

// stateNet is the CNI network a memohfs of stateDir wrote.
func stateNet(stateDir string) NetInfo {
	n := NetInfo{PluginDirs: []string{"/usr/lib/cni", "/opt/cni/bin"},
		ConfDir: filepath.Join(stateDir, "cni", "net.d"), IPAMDir: filepath.Join(stateDir, "cni", "ipam")}
	if m, _ := filepath.Glob(filepath.Join(n.ConfDir, "10-*.conflist")); len(m) == 1 {
		n.Name = strings.TrimSuffix(strings.TrimPrefix(filepath.Base(m[0]), "10-"), ".conflist")
	}
	return n
}
