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
//
// Each target has a dir of its own: native and the loopback's source sit
// outside every bot's data dir, so memohfs's watcher sees no event of
// theirs (it would spend CPU on them during their runs). And every
// target's dirs are as deep as a bot's data/ (ROOT/bench/data): tools
// such as ls -l stat each file by a path from the argument down, so a
// target two names shallower walked less per file (same tree, bound 4
// names deeper: ls -lR warm 75 ms against 91).
type stack struct {
	o       options
	forward []byte // ip_forward as the bench found it (the bridge turns it on)
	dir     string
	state   string
	mnt     string // memohfs mount (allow_other), on the default data/ path (binds)
	sock    string // that memohfs's 9P socket (--9p unix:PATH), in the bench's dir
	// The FUSE fallback (--data-binds=false): a second memohfs, for the
	// data rows' FUSE column only.
	fuseState, fuseMnt string
	upFuse             *exec.Cmd
	upFuseExited       chan struct{}
	anchor             string // the stock loopback's mount (allow_other)
	native             string // native target: a plain dir on the same disk
	loopSrc            string // what the loopback serves, under a dir only root may enter
	userNative         string // native target of the non-root row, owned by benchUID
	exe                string // a copy of this binary that benchUID may run
	up                 *exec.Cmd
	upExited           chan struct{}
	loop               *exec.Cmd
	direct             *runtime.Containerd // the runtime package, straight (control-plane anchor)
	inside             *runtime.Containerd // memohfs's own namespace, to act as the bot
}

const (
	benchBot = "bench"
	// userBot is made by benchUID itself (mkdir as that user), so it and
	// its data/ belong to that user.
	userBot = "ubench"
	// benchUID is the unprivileged user of the non-root row (uid and gid;
	// no passwd entry needed).
	benchUID = 47001
)

func startStack(o options) (*stack, error) {
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, err
	}
	if left, _ := mountsUnder(dir); len(left) > 0 {
		return nil, fmt.Errorf("%s has mounts from an earlier run: %v (umount them)", dir, left)
	}
	os.RemoveAll(dir)
	s := &stack{o: o, dir: dir, state: filepath.Join(dir, "state"), mnt: filepath.Join(dir, "mnt"), sock: filepath.Join(dir, "9p.sock"),
		fuseState: filepath.Join(dir, "state-fuse"), fuseMnt: filepath.Join(dir, "mnt-fuse"),
		anchor: filepath.Join(dir, "anchor"), native: botData(filepath.Join(dir, "native"), benchBot),
		loopSrc: filepath.Join(dir, "private", "loop"), userNative: botData(filepath.Join(dir, "native"), userBot),
		exe: filepath.Join(dir, "bin", "bench")}
	s.forward, _ = os.ReadFile(ipForward)
	if err := s.makeDirs(); err != nil {
		return nil, err
	}
	// memohfs, whole.
	logf, err := os.Create(filepath.Join(dir, "memohfs.log"))
	if err != nil {
		return nil, err
	}
	if s.up, s.upExited, err = startUp(o, s.state, s.mnt, logf, "mfsbench0", "10.216.0.0/22", "--data-binds=true", "--9p", "unix:"+s.sock); err != nil {
		s.stop()
		return nil, err
	}
	flog, err := os.Create(filepath.Join(dir, "memohfs-fuse.log"))
	if err != nil {
		s.stop()
		return nil, err
	}
	if s.upFuse, s.upFuseExited, err = startUp(o, s.fuseState, s.fuseMnt, flog, "mfsbench1", "10.216.4.0/22", "--data-binds=false"); err != nil {
		s.stop()
		return nil, err
	}
	for _, m := range []string{s.mnt, s.fuseMnt} {
		if err := os.Mkdir(filepath.Join(m, benchBot), 0o755); err != nil {
			s.stop()
			return nil, err
		}
		if out, err := s.asUser("mkdir", filepath.Join(m, userBot)).CombinedOutput(); err != nil {
			s.stop()
			return nil, fmt.Errorf("mkdir of a bot as uid %d: %v: %s", benchUID, err, out)
		}
	}
	// The default path's data/ is a bind, made just after mkdir.
	for _, b := range []string{benchBot, userBot} {
		if err := waitBound(filepath.Join(s.mnt, b), 30*time.Second); err != nil {
			s.stop()
			return nil, err
		}
	}

	// The anchor: go-fuse's stock loopback of a dir of its own.
	s.loop = exec.Command(s.exe, "loopback", s.loopSrc, s.anchor)
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

// makeDirs lays out the work dir: the targets' own dirs, the loopback's
// source under a root-only dir (the loopback checks no permissions and
// acts as root: a user must not reach its files at their host path), the
// non-root user's dirs, and a copy of this binary that user may run
// (`go run` builds into a dir only root may enter).
func (s *stack) makeDirs() error {
	for _, d := range []string{s.dir, s.mnt, s.fuseMnt, s.anchor, s.native, s.userNative, filepath.Dir(s.exe)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := os.Mkdir(filepath.Dir(s.loopSrc), 0o700); err != nil {
		return err
	}
	if err := os.Mkdir(s.loopSrc, 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(botData(s.loopSrc, benchBot), 0o755); err != nil {
		return err
	}
	for _, d := range []string{s.userNative, botData(s.loopSrc, userBot)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if err := os.Chown(d, benchUID, benchUID); err != nil {
			return err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	b, err := os.ReadFile(self)
	if err != nil {
		return err
	}
	return os.WriteFile(s.exe, b, 0o755)
}

// asUser is a command run as benchUID (its gid the same, no supplementary
// groups).
func (s *stack) asUser(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: benchUID, Gid: benchUID, Groups: []uint32{}}}
	return cmd
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

// targets are the three places a workload runs: Dir for root's
// workloads, UserDir (writable by benchUID) for the non-root row.
type target struct {
	Name    string
	Dir     string
	UserDir string
}

func (s *stack) targets() []target {
	return []target{
		{"native", s.native, s.userNative},
		{"anchor", botData(s.anchor, benchBot), botData(s.anchor, userBot)},
		{"memohfs", botData(s.mnt, benchBot), botData(s.mnt, userBot)},
		{"fuse", botData(s.fuseMnt, benchBot), botData(s.fuseMnt, userBot)},
	}
}

// botData is where a bot's data/ is below root (a mount, or a plain dir
// laid out as deep).
func botData(root, bot string) string { return filepath.Join(root, bot, "data") }

// startUp starts a memohfs up serving mnt, its log in logf, and waits
// for the mount.
func startUp(o options, state, mnt string, logf *os.File, bridge, subnet string, extra ...string) (*exec.Cmd, chan struct{}, error) {
	cmd := exec.Command(o.Binary, append([]string{"up", "--mount", mnt, "--state-dir", state,
		"--bridge", bridge, "--subnet", subnet, "--stop-bots-on-exit", "--allow-other"}, extra...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	if err := waitMounted(mnt, 90*time.Second, exited); err != nil {
		cmd.Process.Signal(syscall.SIGTERM)
		<-exited
		return nil, nil, fmt.Errorf("memohfs up: %w; log: %s", err, embedded.Tail(logf.Name(), 20))
	}
	return cmd, exited, nil
}

// waitBound waits until bot dir b's data/ is a bind (another device than
// the mount's).
func waitBound(b string, limit time.Duration) error {
	var top syscall.Stat_t
	if err := syscall.Stat(filepath.Dir(b), &top); err != nil {
		return err
	}
	deadline := time.Now().Add(limit)
	for {
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join(b, "data"), &st) == nil && st.Dev != top.Dev {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s/data: no bind within %s", b, limit)
		}
		time.Sleep(10 * time.Millisecond)
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
	for _, up := range []struct {
		cmd    *exec.Cmd
		exited chan struct{}
	}{{s.up, s.upExited}, {s.upFuse, s.upFuseExited}} {
		if up.cmd == nil || up.cmd.Process == nil {
			continue
		}
		up.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-up.exited:
		case <-time.After(2 * time.Minute):
			fmt.Fprintln(os.Stderr, "bench: memohfs did not exit; killing it")
			up.cmd.Process.Kill()
		}
	}
	for _, m := range []string{s.anchor, s.mnt, s.fuseMnt} {
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
