package embedded

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"
	containerd "github.com/containerd/containerd/v2/client"
)

// ContainerdConfig places a private containerd.
type ContainerdConfig struct {
	// BinDir holds containerd and containerd-shim-runc-v2 (the daemon
	// finds the shim by PATH, which gets BinDir first).
	BinDir string
	// Dir holds root/, state/, tmp/, the config and the log.
	Dir string
	// SocketDir holds the sockets and the shims' sockets. Unix socket
	// paths are limited to 108 bytes and a shim's is SocketDir/s/<64 hex>:
	// keep it short. Dir when empty.
	SocketDir string
	LogLevel  string // "warn" when empty
}

// Containerd is a running private containerd.
type Containerd struct {
	cfg     ContainerdConfig
	stamp   Stamp
	Adopted bool // it was running already: an earlier memohfs started it
	exited  chan struct{}
}

const containerdConfigTmpl = `# private containerd for memohfs (config version 4, containerd v2)
version = 4
root  = '{{DIR}}/root'
state = '{{DIR}}/state'
temp  = '{{DIR}}/tmp'
imports = []
disabled_plugins = [
  'io.containerd.grpc.v1.cri',
  'io.containerd.cri.v1.images',
  'io.containerd.cri.v1.runtime',
  'io.containerd.podsandbox.controller.v1.podsandbox',
  'io.containerd.nri.v1.nri',
  'io.containerd.internal.v1.opt',
  'io.containerd.tracing.processor.v1.otlp',
  'io.containerd.internal.v1.tracing',
  'io.containerd.snapshotter.v1.btrfs',
  'io.containerd.snapshotter.v1.zfs',
  'io.containerd.snapshotter.v1.devmapper',
  'io.containerd.snapshotter.v1.blockfile',
  'io.containerd.snapshotter.v1.erofs',
]

[debug]
  level = '{{LEVEL}}'

[plugins]
  [plugins.'io.containerd.server.v1.grpc']
    address = '{{SOCK}}/c.sock'
  [plugins.'io.containerd.server.v1.ttrpc']
    address = '{{SOCK}}/c.sock.ttrpc'
  [plugins.'io.containerd.server.v1.debug']
    address = '{{SOCK}}/debug.sock'
  [plugins.'io.containerd.shim.v1.manager']
    socket_dir = '{{SOCK}}/s'
  [plugins.'io.containerd.gc.v1.scheduler']
    startup_delay = '100ms'
`

func (c ContainerdConfig) withDefaults() ContainerdConfig {
	if c.SocketDir == "" {
		c.SocketDir = c.Dir
	}
	if c.LogLevel == "" {
		c.LogLevel = "warn"
	}
	return c
}

// Address is the daemon's socket.
func (c ContainerdConfig) Address() string {
	return filepath.Join(c.withDefaults().SocketDir, "c.sock")
}

func (c ContainerdConfig) configPath() string { return filepath.Join(c.Dir, "config.toml") }
func (c ContainerdConfig) pidPath() string    { return filepath.Join(c.Dir, "containerd.pid") }

// LogPath is the daemon's log.
func (c ContainerdConfig) LogPath() string { return filepath.Join(c.Dir, "containerd.log") }

// StartContainerd starts the daemon of cfg.Dir, or adopts it if it runs,
// and waits until it answers.
func StartContainerd(ctx context.Context, cfg ContainerdConfig) (*Containerd, error) {
	cfg = cfg.withDefaults()
	if n := len(cfg.SocketDir) + len("/s/") + 64; n > 107 {
		return nil, fmt.Errorf("containerd socket dir %s is too long for unix sockets (%d of 107 bytes)", cfg.SocketDir, n)
	}
	for _, d := range []string{cfg.Dir, cfg.SocketDir} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, err
		}
	}
	c := &Containerd{cfg: cfg, exited: make(chan struct{})}
	if s := ReadStamp(cfg.pidPath()); s.Alive() {
		c.stamp, c.Adopted = s, true
		if err := waitFor(10*time.Second, c.Ping); err != nil {
			return nil, fmt.Errorf("containerd %s (pid file %s) runs but does not answer: %w", s, cfg.pidPath(), err)
		}
		return c, nil
	}
	bin := filepath.Join(cfg.BinDir, "containerd")
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("containerd binary: %w", err)
	}
	conf := strings.NewReplacer("{{DIR}}", cfg.Dir, "{{SOCK}}", cfg.SocketDir, "{{LEVEL}}", cfg.LogLevel).Replace(containerdConfigTmpl)
	if err := os.WriteFile(cfg.configPath(), []byte(conf), 0o644); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(cfg.LogPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "--config", cfg.configPath())
	cmd.Env = append(os.Environ(), "PATH="+cfg.BinDir+":/usr/sbin:/usr/bin:/sbin:/bin")
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a ^C meant for memohfs must not reach it
	// before memohfs has stopped using it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	c.stamp = StampOf(cmd.Process.Pid)
	go func() { cmd.Wait(); close(c.exited) }()
	if err := writeStamp(cfg.pidPath(), c.stamp); err != nil {
		c.Stop(5 * time.Second)
		return nil, err
	}
	err = waitFor(20*time.Second, func() error {
		select {
		case <-c.exited:
			return errors.New("containerd exited")
		default:
		}
		return c.Ping()
	})
	if err != nil {
		c.Stop(5 * time.Second)
		return nil, fmt.Errorf("containerd did not come up: %v; its log ends: %s", err, Tail(cfg.LogPath(), 8))
	}
	return c, nil
}

// Ping asks the daemon for its version.
func (c *Containerd) Ping() error {
	client, err := containerd.New(c.cfg.Address(), containerd.WithTimeout(2*time.Second))
	if err != nil {
		return err
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = client.Version(ctx)
	return err
}

// Address is the daemon's socket.
func (c *Containerd) Address() string { return c.cfg.Address() }

// Config is where the daemon lives.
func (c *Containerd) Config() ContainerdConfig { return c.cfg }

// Pid is the daemon's pid (0 once it is gone).
func (c *Containerd) Pid() int { pid, _ := c.stamp.Pid(); return pid }

// Stamp names the daemon's process.
func (c *Containerd) Stamp() Stamp { return c.stamp }

// Stop stops the daemon (SIGTERM, then SIGKILL after grace). Shims and
// the tasks they run outlive it, by containerd's design.
func (c *Containerd) Stop(grace time.Duration) error {
	if c == nil || c.stamp == "" {
		return nil
	}
	err := c.stamp.Terminate(syscall.SIGTERM, grace)
	if err == nil {
		os.Remove(c.cfg.pidPath())
	}
	return err
}

// LoadContainerdConfig recovers the configuration of the containerd whose
// directory is dir from the config file it wrote there.
func LoadContainerdConfig(dir, binDir string) (ContainerdConfig, error) {
	var conf struct {
		Debug   struct{ Level string }
		Plugins map[string]struct {
			Address string `toml:"address"`
		}
	}
	if _, err := toml.DecodeFile(filepath.Join(dir, "config.toml"), &conf); err != nil {
		return ContainerdConfig{}, err
	}
	addr := conf.Plugins["io.containerd.server.v1.grpc"].Address
	if addr == "" {
		return ContainerdConfig{}, fmt.Errorf("%s/config.toml has no grpc address", dir)
	}
	return ContainerdConfig{BinDir: binDir, Dir: dir, SocketDir: filepath.Dir(addr), LogLevel: conf.Debug.Level}, nil
}
