package testenv

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/memohfs/memohfs/internal/embedded"
)

// CleanupStateDir tears down what a whole memohfs (`memohfs up`) left
// under stateDir, whatever state it died in: the mount, every task and
// container in its containerd (started again over its state if it is not
// running), the daemon, and its Postgres. Only processes recorded in the
// state dir's pid files are signalled.
func CleanupStateDir(stateDir, mnt string) error {
	var errs []error
	if mnt != "" {
		for _, m := range mountsUnder(mnt) {
			AbortFUSE(m)
		}
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
				tc := &Containerd{c}
				errs = append(errs, tc.sweepAll(stateNet(stateDir)), tc.stop())
			}
		}
		errs = append(errs, err)
	}
	embedded.ReadStamp(filepath.Join(stateDir, "postgres", "postgres.pid")).Terminate(syscall.SIGINT, 20*time.Second)
	unmountUnder(stateDir)
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
