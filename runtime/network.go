package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/netns"
	"github.com/containerd/errdefs"
	gocni "github.com/containerd/go-cni"
	"golang.org/x/sys/unix"
)

// NetworkConfig describes the bridge network every bot joins. The project
// writes the CNI conflist itself (bridge + host-local IPAM, plus go-cni's
// loopback), so no system CNI configuration is read or changed.
type NetworkConfig struct {
	Name       string   // CNI network name; "memohfs" when empty
	Bridge     string   // bridge device; "memohfs0" when empty (max 15 bytes)
	Subnet     string   // IPv4 CIDR; "10.209.0.0/16" when empty
	Gateway    string   // bridge address; the subnet's first host when empty
	PluginDirs []string // CNI plugin dirs; /usr/lib/cni and /opt/cni/bin when empty
	ConfDir    string   // where the conflist is written; <state>/cni/net.d
	IPAMDir    string   // host-local IPAM state; <state>/cni/ipam
	// IPMasq masquerades bot traffic leaving the subnet. Off by default: a
	// bot reaches the bridge (and the host) only.
	IPMasq bool
}

func (n *NetworkConfig) setDefaults(stateDir string) error {
	if n.Name == "" {
		n.Name = "memohfs"
	}
	if n.Bridge == "" {
		n.Bridge = "memohfs0"
	}
	if len(n.Bridge) > 15 {
		return fmt.Errorf("runtime: bridge name %q longer than 15 bytes: %w", n.Bridge, errdefs.ErrInvalidArgument)
	}
	if n.Subnet == "" {
		n.Subnet = "10.209.0.0/16"
	}
	prefix, err := netip.ParsePrefix(n.Subnet)
	if err != nil || !prefix.Addr().Is4() || prefix.Bits() > 30 {
		return fmt.Errorf("runtime: subnet %q: want an IPv4 CIDR of /30 or wider: %w", n.Subnet, errdefs.ErrInvalidArgument)
	}
	n.Subnet = prefix.Masked().String()
	if n.Gateway == "" {
		n.Gateway = prefix.Masked().Addr().Next().String()
	} else if gw, err := netip.ParseAddr(n.Gateway); err != nil || !prefix.Contains(gw) {
		return fmt.Errorf("runtime: gateway %q not in subnet %s: %w", n.Gateway, n.Subnet, errdefs.ErrInvalidArgument)
	}
	if len(n.PluginDirs) == 0 {
		n.PluginDirs = []string{"/usr/lib/cni", "/opt/cni/bin"}
	}
	if n.ConfDir == "" {
		n.ConfDir = filepath.Join(stateDir, "cni", "net.d")
	}
	if n.IPAMDir == "" {
		n.IPAMDir = filepath.Join(stateDir, "cni", "ipam")
	}
	return nil
}

// Conflist renders the CNI network configuration list.
func (n NetworkConfig) Conflist() ([]byte, error) {
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       n.Name,
		"plugins": []any{map[string]any{
			"type":             "bridge",
			"bridge":           n.Bridge,
			"isGateway":        true,
			"isDefaultGateway": false,
			"ipMasq":           n.IPMasq,
			"hairpinMode":      false,
			"ipam": map[string]any{
				"type":    "host-local",
				"dataDir": n.IPAMDir,
				"ranges":  [][]map[string]string{{{"subnet": n.Subnet, "gateway": n.Gateway}}},
			},
		}},
	}
	return json.MarshalIndent(conf, "", "  ")
}

// ConflistPath is where the conflist is written.
func (n NetworkConfig) ConflistPath() string {
	return filepath.Join(n.ConfDir, "10-"+n.Name+".conflist")
}

// WriteConflist writes the conflist (atomically) and returns its path.
func (n NetworkConfig) WriteConflist() (string, error) {
	b, err := n.Conflist()
	if err != nil {
		return "", err
	}
	for _, d := range []string{n.ConfDir, n.IPAMDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", err
		}
	}
	p := n.ConflistPath()
	if old, err := os.ReadFile(p); err == nil && string(old) == string(b) {
		return p, nil
	}
	f, err := os.CreateTemp(n.ConfDir, ".conflist-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return p, os.Rename(f.Name(), p)
}

// CNIID is the id a container is known by to CNI and host-local IPAM. It
// carries the containerd namespace, so two namespaces sharing one network
// (and one IPAM store) never release each other's addresses.
func CNIID(namespace, containerID string) string { return namespace + "." + containerID }

// network owns CNI setup and teardown with pinned network namespaces.
type network struct {
	cfg       NetworkConfig
	namespace string
	dir       string // pinned netns files
	cni       gocni.CNI
}

func newNetwork(cfg NetworkConfig, namespace, netnsDir string) (*network, error) {
	path, err := cfg.WriteConflist()
	if err != nil {
		return nil, fmt.Errorf("write CNI conflist: %w", err)
	}
	cni, err := gocni.New(gocni.WithPluginDir(cfg.PluginDirs), gocni.WithMinNetworkCount(2))
	if err != nil {
		return nil, err
	}
	// The conflist first, so the bridge interface is eth0 (go-cni names
	// interfaces in load order); loopback after it.
	if err := cni.Load(gocni.WithConfListFile(path), gocni.WithLoNetwork); err != nil {
		return nil, fmt.Errorf("load CNI conflist %s: %w", path, err)
	}
	for _, plugin := range []string{"bridge", "host-local", "loopback"} {
		if !pluginPresent(cfg.PluginDirs, plugin) {
			return nil, fmt.Errorf("CNI plugin %q not in %v (install containernetworking-plugins): %w",
				plugin, cfg.PluginDirs, errdefs.ErrFailedPrecondition)
		}
	}
	return &network{cfg: cfg, namespace: namespace, dir: netnsDir, cni: cni}, nil
}

func pluginPresent(dirs []string, name string) bool {
	for _, d := range dirs {
		if fi, err := os.Stat(filepath.Join(d, name)); err == nil && fi.Mode()&0o111 != 0 {
			return true
		}
	}
	return false
}

// setup pins a new network namespace and attaches it to the bridge. It
// fails unless the bot got an address: a task without a reachable network
// is not started.
func (n *network) setup(ctx context.Context, containerID string) (nsPath, ip string, err error) {
	id := CNIID(n.namespace, containerID)
	nsh, err := netns.NewNetNS(n.dir)
	if err != nil {
		return "", "", fmt.Errorf("create netns: %w", err)
	}
	defer func() {
		if err != nil {
			nsh.Remove()
		}
	}()
	res, err := n.cni.Setup(ctx, id, nsh.GetPath())
	if err != nil && strings.Contains(err.Error(), "duplicate allocation") {
		// A lease of an earlier life of this container survived (crash
		// between setup and teardown): release it and try once more.
		_ = n.cni.Remove(ctx, id, nsh.GetPath())
		res, err = n.cni.Setup(ctx, id, nsh.GetPath())
	}
	if err != nil {
		return "", "", fmt.Errorf("CNI setup for %s: %w", id, err)
	}
	for _, name := range []string{"eth0"} {
		iface := res.Interfaces[name]
		if iface == nil {
			continue
		}
		for _, c := range iface.IPConfigs {
			if c.IP.To4() != nil {
				ip = c.IP.String()
			}
		}
	}
	if ip == "" {
		_ = n.cni.Remove(ctx, id, nsh.GetPath())
		return "", "", fmt.Errorf("CNI setup for %s gave no IPv4 address: %w", id, errdefs.ErrUnknown)
	}
	return nsh.GetPath(), ip, nil
}

// teardown releases the address and removes the pinned namespace. It is
// idempotent: a namespace that is already gone still gets its IPAM lease
// released.
func (n *network) teardown(ctx context.Context, containerID, nsPath string) error {
	id := CNIID(n.namespace, containerID)
	var errs []error
	cniPath := nsPath
	var st unix.Statfs_t
	if nsPath != "" && (unix.Statfs(nsPath, &st) != nil || st.Type != unix.NSFS_MAGIC) {
		// Not a pinned namespace (any more): a kill between its unmount
		// and its removal leaves a plain file, which CNI's DEL refuses
		// ("unknown FS magic"). Its interfaces went with it; release
		// the address alone.
		cniPath = ""
	}
	if err := n.cni.Remove(ctx, id, cniPath); err != nil {
		errs = append(errs, fmt.Errorf("CNI remove for %s: %w", id, err))
	}
	if nsPath != "" {
		if err := netns.LoadNetNS(nsPath).Remove(); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove netns %s: %w", nsPath, err))
		}
	}
	return errors.Join(errs...)
}

// leased reports whether the IPAM store holds an address for the container.
func (n *network) leased(containerID string) (string, bool) {
	id := CNIID(n.namespace, containerID)
	leases, _ := IPAMLeases(n.cfg)
	for ip, owner := range leases {
		if owner == id {
			return ip, true
		}
	}
	return "", false
}

// IPAMLeases reads the host-local IPAM store of the network: address ->
// CNI id of its holder.
func IPAMLeases(n NetworkConfig) (map[string]string, error) {
	dir := filepath.Join(n.IPAMDir, n.Name)
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return map[string]string{}, nil
		}
		return nil, err
	}
	out := map[string]string{}
	for _, e := range entries {
		if net.ParseIP(e.Name()) == nil {
			continue // last_reserved_ip, lock
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		// host-local writes "<id>\r\n<ifname>".
		id, _, _ := strings.Cut(string(b), "\n")
		out[e.Name()] = strings.TrimSpace(id)
	}
	return out, nil
}

// ReleaseNetworkLeaks frees network state no live task of this namespace
// uses: IPAM leases of containers that are gone or not running (a crash
// between start and stop leaves them), and pinned netns files no container
// records. It returns what it released.
func (c *Containerd) ReleaseNetworkLeaks(ctx context.Context) (_ []string, err error) {
	defer native(&err)
	return c.networkLeaks(ctx, true)
}

// NetworkLeaks lists what ReleaseNetworkLeaks would release, changing
// nothing.
func (c *Containerd) NetworkLeaks(ctx context.Context) (_ []string, err error) {
	defer native(&err)
	return c.networkLeaks(ctx, false)
}

func (c *Containerd) networkLeaks(ctx context.Context, release bool) ([]string, error) {
	c.starting.Lock()
	defer c.starting.Unlock()
	ctx = c.ns(ctx)
	// A running (or paused) task's container is the only rightful holder
	// of a lease and a pinned netns.
	live := func(ctr containerd.Container) bool {
		task, err := ctr.Task(ctx, nil)
		if err != nil {
			return false
		}
		st, err := task.Status(ctx)
		return err == nil && (st.Status == containerd.Running || st.Status == containerd.Paused || st.Status == containerd.Pausing)
	}
	var leaks []string
	leases, err := IPAMLeases(c.cfg.Network)
	if err != nil {
		return nil, err
	}
	inUse := map[string]bool{}
	for ip, id := range leases {
		cid, ok := strings.CutPrefix(id, c.cfg.Namespace+".")
		if !ok {
			continue // another namespace's
		}
		ctr, lerr := c.client.LoadContainer(ctx, cid)
		if lerr != nil && !errdefs.IsNotFound(lerr) {
			return leaks, lerr
		}
		if lerr == nil && live(ctr) {
			labels, _ := ctr.Labels(ctx)
			inUse[labels[LabelNetNS]] = true
			continue
		}
		if release {
			var rerr error
			if lerr == nil {
				rerr = c.releaseNetwork(ctx, ctr)
			} else {
				rerr = c.net.teardown(ctx, cid, "")
			}
			if rerr != nil {
				return leaks, rerr
			}
		}
		leaks = append(leaks, fmt.Sprintf("lease %s of %s", ip, cid))
	}
	entries, _ := os.ReadDir(c.cfg.NetNSDir)
	for _, e := range entries {
		p := filepath.Join(c.cfg.NetNSDir, e.Name())
		if inUse[p] {
			continue
		}
		if release {
			if _, err := os.Stat(p); err != nil {
				continue // released with its container's lease above
			}
			holders, err := c.client.ContainerService().List(ctx, `labels."`+LabelNetNS+`"==`+strconv.Quote(p))
			if err != nil {
				return leaks, err
			}
			released := false
			for _, h := range holders {
				if ctr, err := c.client.LoadContainer(ctx, h.ID); err == nil {
					if live(ctr) {
						released = true // pinned by a live task after all
						break
					}
					if err := c.releaseNetwork(ctx, ctr); err != nil {
						return leaks, err
					}
				}
			}
			if released {
				continue
			}
			if _, err := os.Stat(p); err == nil {
				if err := netns.LoadNetNS(p).Remove(); err != nil {
					return leaks, fmt.Errorf("remove netns %s: %w", p, err)
				}
			}
		}
		leaks = append(leaks, "netns "+e.Name())
	}
	return leaks, nil
}
