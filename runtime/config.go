package runtime

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/memohfs/memohfs/runtime/ociimage"
)

// Config says which containerd to drive and where the bot runtime keeps its
// host-side state.
type Config struct {
	Address     string // containerd socket
	Namespace   string // containerd namespace; "memohfs" when empty
	Snapshotter string // "overlayfs" when empty
	// Image is the bot image reference; ociimage.DefaultName when empty.
	Image string
	// ImageArchive, when set, is an OCI layout tar imported if Image is
	// missing. Without it a missing image is pulled.
	ImageArchive string
	// Runc is the runc binary; looked up in PATH when empty.
	Runc string
	// StateDir holds runc state, pinned netns files, FIFOs and bot logs
	// unless the fields below place them elsewhere. Required.
	StateDir string
	RuncRoot string // <StateDir>/runc
	NetNSDir string // <StateDir>/netns
	FIFODir  string // <StateDir>/fifo
	LogDir   string // <StateDir>/logs
	// ResolvConf and Localtime are bind-mounted read-only into every bot;
	// /etc/resolv.conf and /etc/localtime when empty and present.
	ResolvConf string
	Localtime  string
	Network    NetworkConfig
}

func (c *Config) setDefaults() error {
	if c.Address == "" {
		return errors.New("runtime: containerd address is required")
	}
	if c.StateDir == "" {
		return errors.New("runtime: state dir is required")
	}
	if !filepath.IsAbs(c.StateDir) {
		abs, err := filepath.Abs(c.StateDir)
		if err != nil {
			return err
		}
		c.StateDir = abs
	}
	if c.Namespace == "" {
		c.Namespace = "memohfs"
	}
	if c.Snapshotter == "" {
		c.Snapshotter = "overlayfs"
	}
	if c.Image == "" {
		c.Image = ociimage.DefaultName
	}
	if c.Runc == "" {
		p, err := exec.LookPath("runc")
		if err != nil {
			for _, cand := range []string{"/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc"} {
				if _, serr := os.Stat(cand); serr == nil {
					p, err = cand, nil
					break
				}
			}
		}
		if err != nil {
			return fmt.Errorf("runtime: runc not found (install runc): %w", err)
		}
		c.Runc = p
	}
	def := func(p *string, sub string) {
		if *p == "" {
			*p = filepath.Join(c.StateDir, sub)
		}
	}
	def(&c.RuncRoot, "runc")
	def(&c.NetNSDir, "netns")
	def(&c.FIFODir, "fifo")
	def(&c.LogDir, "logs")
	if c.ResolvConf == "" {
		if _, err := os.Stat("/etc/resolv.conf"); err == nil {
			c.ResolvConf = "/etc/resolv.conf"
		}
	}
	if c.Localtime == "" {
		if _, err := os.Stat("/etc/localtime"); err == nil {
			c.Localtime = "/etc/localtime"
		}
	}
	if err := c.Network.setDefaults(c.StateDir); err != nil {
		return err
	}
	for _, d := range []string{c.StateDir, c.RuncRoot, c.NetNSDir, c.FIFODir, c.LogDir} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return fmt.Errorf("runtime: %w", err)
		}
	}
	return nil
}

// LogPath is the host file that receives the bot's stdout and stderr.
func (c *Config) LogPath(bot string) string { return filepath.Join(c.LogDir, bot+".log") }
