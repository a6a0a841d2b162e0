package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/memohfs/memohfs/internal/daemon"
	"github.com/urfave/cli/v2"
)

// TestConfigPrecedence: flag > MEMOHFS_* environment > config file >
// default, for every serve option.
func TestConfigPrecedence(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "memohfs.toml")
	if err := os.WriteFile(conf, []byte("subnet = \"10.1.0.0/16\"\nbridge = \"fromfile0\"\nnamespace = \"fromfile\"\nallow-other = true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MEMOHFS_SUBNET", "10.2.0.0/16")
	t.Setenv("MEMOHFS_NAMESPACE", "fromenv")
	var got daemon.Options
	cmd := serveCommand()
	cmd.Action = func(c *cli.Context) error { got = serveOptionsFrom(c); return nil }
	app := &cli.App{Name: "memohfs", Commands: []*cli.Command{cmd}}
	if err := app.Run([]string{"memohfs", "serve", "--config", conf, "--mount", "/m", "--subnet", "10.3.0.0/16"}); err != nil {
		t.Fatal(err)
	}
	n := got.Runtime.Network
	if n.Subnet != "10.3.0.0/16" {
		t.Errorf("subnet %s: the flag must win", n.Subnet)
	}
	if got.Runtime.Namespace != "fromenv" {
		t.Errorf("namespace %s: the environment must beat the file", got.Runtime.Namespace)
	}
	if n.Bridge != "fromfile0" || !got.AllowOther {
		t.Errorf("bridge %s allow-other %v: the file must beat the default", n.Bridge, got.AllowOther)
	}
	if got.Runtime.Snapshotter != "overlayfs" || got.Runtime.Address != "/run/containerd/containerd.sock" {
		t.Errorf("defaults: %+v", got.Runtime)
	}
}
