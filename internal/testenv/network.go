package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/containerd/containerd/v2/pkg/netns"
	gocni "github.com/containerd/go-cni"
	"github.com/memohfs/memohfs/internal/embedded"
	"github.com/memohfs/memohfs/runtime"
)

// NetInfo is the run's own bridge network.
type NetInfo struct {
	Name       string // CNI network name
	Bridge     string
	Subnet     string
	PluginDirs []string
	ConfDir    string
	IPAMDir    string

	runDir string // the run's dir, whose "net" file says it uses the network
}

// Config returns the runtime's network configuration for this run.
func (n NetInfo) Config() runtime.NetworkConfig {
	return runtime.NetworkConfig{
		Name: n.Name, Bridge: n.Bridge, Subnet: n.Subnet,
		PluginDirs: n.PluginDirs, ConfDir: n.ConfDir, IPAMDir: n.IPAMDir,
	}
}

// ipForwardPath is a var so a test can point it at a file of its own.
var ipForwardPath = "/proc/sys/net/ipv4/ip_forward"

// lockRoot serialises work on the shared parts of Root across concurrent
// test processes: stale cleanup, subnet choice, ip_forward.
func lockRoot() (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(Root, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}

// allocateNet picks a /24 in 10.213.0.0/16 that no live run and no host
// interface uses, names a bridge after the run, and saves ip_forward the
// first time any run touches it.
func allocateNet(id, dir string) (NetInfo, error) {
	unlock, err := lockRoot()
	if err != nil {
		return NetInfo{}, err
	}
	defer unlock()
	plugins := []string{"/usr/lib/cni", "/opt/cni/bin"}
	found := false
	for _, d := range plugins {
		if _, err := os.Stat(filepath.Join(d, "bridge")); err == nil {
			found = true
		}
	}
	if !found {
		return NetInfo{}, errors.New("CNI plugins missing (run `make deps`: containernetworking-plugins)")
	}
	if _, err := lookPath("ip", "/usr/sbin", "/sbin"); err != nil {
		return NetInfo{}, errors.New("ip missing (run `make deps`: iproute2)")
	}
	used := map[string]bool{}
	entries, _ := os.ReadDir(Root)
	for _, e := range entries {
		if b, err := os.ReadFile(filepath.Join(Root, e.Name(), "net")); err == nil {
			if f := strings.Fields(string(b)); len(f) > 0 {
				used[f[0]] = true
			}
		}
	}
	var hostPrefixes []netip.Prefix
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				hostPrefixes = append(hostPrefixes, p.Masked())
			}
		}
	}
	subnet := ""
	for i := 1; i < 255 && subnet == ""; i++ {
		cand := netip.MustParsePrefix(fmt.Sprintf("10.213.%d.0/24", i))
		if used[cand.String()] {
			continue
		}
		clash := false
		for _, hp := range hostPrefixes {
			if hp.Overlaps(cand) {
				clash = true
			}
		}
		if !clash {
			subnet = cand.String()
		}
	}
	if subnet == "" {
		return NetInfo{}, errors.New("no free test subnet in 10.213.0.0/16")
	}
	n := NetInfo{
		Name: "mfst-" + id, Bridge: "mfst" + id, Subnet: subnet, PluginDirs: plugins,
		ConfDir: filepath.Join(dir, "cni", "net.d"), IPAMDir: filepath.Join(dir, "cni", "ipam"), runDir: dir,
	}
	if err := os.WriteFile(filepath.Join(dir, "net"), []byte(n.Subnet+" "+n.Bridge+" "+n.Name+"\n"), 0o644); err != nil {
		return NetInfo{}, err
	}
	orig := filepath.Join(Root, "ip_forward.orig")
	if _, err := os.Stat(orig); os.IsNotExist(err) {
		v, err := os.ReadFile(ipForwardPath)
		if err != nil {
			return NetInfo{}, err
		}
		if err := os.WriteFile(orig, v, 0o644); err != nil {
			return NetInfo{}, err
		}
	}
	if _, err := n.Config().WriteConflist(); err != nil {
		return NetInfo{}, err
	}
	return n, nil
}

// releaseNet deletes the run's bridge and, when no other run is live,
// puts ip_forward back as the first run found it.
func releaseNet(n NetInfo) error {
	var errs []error
	if err := deleteLink(n.Bridge); err != nil {
		errs = append(errs, err)
	}
	removeCNICache(n.Name)
	unlock, err := lockRoot()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	defer unlock()
	// No longer a user of the network: a run finishing at the same time
	// must not wait for this one (each would wait for the other, and
	// ip_forward would never be put back).
	if n.runDir != "" {
		if err := os.Remove(filepath.Join(n.runDir, "net")); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	if err := restoreIPForward(os.Getpid()); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// restoreIPForward writes back the saved ip_forward once no live run but
// self still uses the network (has its "net" file). Call with the root
// lock held.
func restoreIPForward(self int) error {
	entries, _ := os.ReadDir(Root)
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		if _, err := os.Stat(filepath.Join(Root, e.Name(), "net")); err != nil {
			continue // not (or no longer) using the network
		}
		if pid, ok := embedded.ReadStamp(filepath.Join(Root, e.Name(), "owner")).Pid(); ok && pid != self {
			return nil // another run still needs the network
		}
	}
	orig := filepath.Join(Root, "ip_forward.orig")
	v, err := os.ReadFile(orig)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := os.WriteFile(ipForwardPath, v, 0o644); err != nil {
		return fmt.Errorf("restore ip_forward: %w", err)
	}
	return os.Remove(orig)
}

func deleteLink(name string) error {
	if name == "" {
		return nil
	}
	if _, err := net.InterfaceByName(name); err != nil {
		return nil // already gone
	}
	out, err := exec.Command("ip", "link", "del", name).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip link del %s: %v: %s", name, err, out)
	}
	return nil
}

// removeCNICache drops libcni's result cache entries of a network (kept
// in /var/lib/cni/results, which go-cni cannot move).
func removeCNICache(network string) {
	matches, _ := filepath.Glob(filepath.Join("/var/lib/cni/results", network+"-*"))
	for _, m := range matches {
		os.Remove(m)
	}
}

func (n NetInfo) cni() (gocni.CNI, error) {
	c, err := gocni.New(gocni.WithPluginDir(n.PluginDirs), gocni.WithMinNetworkCount(2))
	if err != nil {
		return nil, err
	}
	if err := c.Load(gocni.WithConfListFile(n.Config().ConflistPath()), gocni.WithLoNetwork); err != nil {
		return nil, err
	}
	return c, nil
}

// removeCNI releases one CNI attachment and its pinned netns.
func (n NetInfo) removeCNI(ctx context.Context, cniID, nsPath string) error {
	c, err := n.cni()
	if err != nil {
		return err
	}
	err = c.Remove(ctx, cniID, nsPath)
	if nsPath != "" {
		if rerr := netns.LoadNetNS(nsPath).Remove(); rerr != nil && !os.IsNotExist(rerr) {
			err = errors.Join(err, rerr)
		}
	}
	return err
}

// sweepCNI releases every IPAM lease left in the run's store and unmounts
// every pinned netns and other mount left under the run dir.
func (n NetInfo) sweepCNI(ctx context.Context) error {
	if n.Name == "" {
		return nil
	}
	var errs []error
	leases, err := runtime.IPAMLeases(n.Config())
	if err != nil {
		return err
	}
	for ip, id := range leases {
		if err := n.removeCNI(ctx, id, ""); err != nil {
			errs = append(errs, fmt.Errorf("release lease %s: %w", ip, err))
		}
	}
	return errors.Join(errs...)
}
