package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/memohfs/memohfs/internal/embedded"
	"github.com/memohfs/memohfs/mount"
	"github.com/memohfs/memohfs/runtime"
)

// stack is what the bench runs against.
type stack struct {
	o        options
	forward  []byte // ip_forward as the bench found it (the bridge turns it on)
	dir      string
	state    string
	mnt      string // memohfs mount
	anchor   string // the stock loopback's mount
	hostData string // the bench bot's host data dir (native)
	up       *exec.Cmd
	upExited chan struct{}
	loop     *exec.Cmd
	direct   *runtime.Containerd // the runtime package, straight (control-plane anchor)
	inside   *runtime.Containerd // memohfs's own namespace, to act as the bot
}

const benchBot = "bench"

func startStack(o options) (*stack, error) {
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, err
	}
	if left, _ := mountsUnder(dir); len(left) > 0 {
		return nil, fmt.Errorf("%s has mounts from an earlier run: %v (umount them)", dir, left)
	}
	os.RemoveAll(dir)
	s := &stack{o: o, dir: dir, state: filepath.Join(dir, "state"), mnt: filepath.Join(dir, "mnt"),
		anchor: filepath.Join(dir, "anchor")}
	s.forward, _ = os.ReadFile(ipForward)
	for _, d := range []string{dir, s.mnt, s.anchor} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	// memohfs, whole.
	logf, err := os.Create(filepath.Join(dir, "memohfs.log"))
	if err != nil {
		return nil, err
	}
	s.up = exec.Command(o.Binary, "up", "--mount", s.mnt, "--state-dir", s.state,
		"--bridge", "mfsbench0", "--subnet", "10.216.0.0/22", "--stop-bots-on-exit")
	s.up.Stdout, s.up.Stderr = logf, logf
	s.up.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.up.Start(); err != nil {
		return nil, err
	}
	s.upExited = make(chan struct{})
	go func() { s.up.Wait(); close(s.upExited) }()
	if err := waitMounted(s.mnt, 90*time.Second, s.upExited); err != nil {
		s.stop()
		return nil, fmt.Errorf("memohfs up: %w; log: %s", err, embedded.Tail(logf.Name(), 20))
	}
	if err := os.Mkdir(filepath.Join(s.mnt, benchBot), 0o755); err != nil {
		s.stop()
		return nil, err
	}
	s.hostData = filepath.Join(s.state, "data", "bots", benchBot)

	// The anchor: go-fuse's stock loopback of the same host dir.
	self, err := os.Executable()
	if err != nil {
		s.stop()
		return nil, err
	}
	s.loop = exec.Command(self, "loopback", s.hostData, s.anchor)
	out, _ := s.loop.StdoutPipe()
	s.loop.Stderr = os.Stderr
	if err := s.loop.Start(); err != nil {
		s.stop()
		return nil, err
	}
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "mounted\n" {
		s.stop()
		return nil, fmt.Errorf("anchor loopback did not mount: %q", line)
	}

	// The runtime package straight, on memohfs's containerd.
	run, err := embedded.RunDir(s.state)
	if err != nil {
		s.stop()
		return nil, err
	}
	netcfg := func(name string) runtime.NetworkConfig {
		return runtime.NetworkConfig{Name: name, Bridge: "mfsbench0", Subnet: "10.216.0.0/22",
			ConfDir: filepath.Join(dir, name+"-cni"), IPAMDir: filepath.Join(s.state, "cni", "ipam")}
	}
	s.direct, err = runtime.New(runtime.Config{Address: filepath.Join(run, "ctrd", "c.sock"), Namespace: "bench-direct",
		ImageArchive: filepath.Join(s.state, "images", "bot.tar"), StateDir: filepath.Join(dir, "direct"),
		Network: netcfg("memohfs")})
	if err == nil {
		_, err = s.direct.EnsureImage(context.Background())
	}
	if err == nil {
		s.inside, err = runtime.New(runtime.Config{Address: filepath.Join(run, "ctrd", "c.sock"), Namespace: "memohfs",
			StateDir: filepath.Join(dir, "inside"), Network: netcfg("memohfs")})
	}
	if err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

func waitMounted(dir string, d time.Duration, exited chan struct{}) error {
	deadline := time.Now().Add(d)
	for {
		if st, _ := mount.Check(dir); st == mount.Mounted {
			return nil
		}
		select {
		case <-exited:
			return errors.New("exited")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not mounted within %s", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// targets are the three places a workload runs.
type target struct {
	Name string
	Dir  string
}

func (s *stack) targets() []target {
	return []target{
		{"native", s.hostData},
		{"anchor", s.anchor},
		{"memohfs", filepath.Join(s.mnt, benchBot, "data")},
	}
}

// rss is memohfs's resident set, in MiB.
func (s *stack) rss() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.up.Process.Pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			var kb float64
			fmt.Sscan(f[1], &kb)
			return kb / 1024
		}
	}
	return 0
}

const ipForward = "/proc/sys/net/ipv4/ip_forward"

// stop ends everything the bench started, in order.
func (s *stack) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if s.direct != nil {
		s.direct.Stop(ctx, "direct", time.Second)
		s.direct.Delete(ctx, "direct")
		s.direct.Close()
	}
	if s.inside != nil {
		s.inside.Close()
	}
	if s.loop != nil && s.loop.Process != nil {
		s.loop.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { s.loop.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			mount.Unmount(s.anchor, 0)
			s.loop.Process.Kill()
		}
	}
	if s.up != nil && s.up.Process != nil {
		s.up.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.upExited:
		case <-time.After(2 * time.Minute):
			fmt.Fprintln(os.Stderr, "bench: memohfs did not exit; killing it")
			s.up.Process.Kill()
		}
	}
	for _, m := range []string{s.anchor, s.mnt} {
		if st, _ := mount.Check(m); st != mount.NotMounted {
			mount.Unmount(m, time.Second)
		}
	}
	if left, _ := mountsUnder(s.dir); len(left) == 0 {
		os.RemoveAll(s.dir)
	} else {
		fmt.Fprintf(os.Stderr, "bench: mounts left under %s, not removing it: %v\n", s.dir, left)
	}
	if run, err := embedded.RunDir(s.state); err == nil {
		os.RemoveAll(run)
	}
	exec.Command("ip", "link", "del", "mfsbench0").Run()
	if len(s.forward) > 0 {
		os.WriteFile(ipForward, s.forward, 0o644)
	}
	// The direct runtime's namespace cgroups (containerd makes one per
	// namespace and leaves it when the last container goes).
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/bench-direct")
	for _, d := range dirs {
		syscall.Rmdir(d)
	}
}

func mountsUnder(dir string) ([]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			out = append(out, f[4])
		}
	}
	return out, nil
}

// dropCaches empties the page, dentry and inode caches (cold runs).
func dropCaches() error {
	syscall.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
}
