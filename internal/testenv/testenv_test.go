package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/memohfs/memohfs/internal/embedded"
	"github.com/memohfs/memohfs/runtime"
)

func TestMain(m *testing.M) {
	if os.Getenv("TESTENV_ORPHAN") == "1" {
		orphanMain()
		return
	}
	if os.Getenv("TESTENV_STUCK") == "1" {
		stuckMain()
		return
	}
	Main(m, Needs{Containerd: true, Postgres: true})
}

type orphan struct {
	Dir, Bridge                  string
	Containerd, Postgres, Task   int
	ContainerdStamp, TaskStamp   string
	PostgresStamp, NetNS, Subnet string
}

// orphanMain sets up a stack, starts a bot on it and dies by SIGKILL,
// leaving everything running, as a test binary killed by a timeout would.
func orphanMain() {
	fail := func(err error) {
		os.Stderr.WriteString("orphan: " + err.Error() + "\n")
		os.Exit(3)
	}
	e, err := setup(Needs{Containerd: true, Postgres: true})
	if err != nil {
		fail(err)
	}
	state := filepath.Join(e.Dir, "t", "orphan")
	data := filepath.Join(state, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		fail(err)
	}
	rt, err := runtime.New(runtime.Config{Address: e.Containerd.Address(), Namespace: "orphan",
		ImageArchive: e.ImageArchive, StateDir: state, Network: e.Net.Config()})
	if err != nil {
		fail(err)
	}
	ctx := context.Background()
	if _, err := rt.EnsureImage(ctx); err != nil {
		fail(err)
	}
	if _, err := rt.Create(ctx, runtime.BotSpec{Bot: "orphan", DataDir: data}); err != nil {
		fail(err)
	}
	ti, err := rt.Start(ctx, "orphan")
	if err != nil {
		fail(err)
	}
	c, _ := rt.Container(ctx, "orphan")
	pgPid, _ := e.Postgres.Stamp().Pid()
	out, _ := json.Marshal(orphan{
		Dir: e.Dir, Bridge: e.Net.Bridge, Subnet: e.Net.Subnet,
		Containerd: e.Containerd.Pid(), ContainerdStamp: string(e.Containerd.Stamp()),
		Postgres: pgPid, PostgresStamp: string(e.Postgres.Stamp()),
		Task: int(ti.Pid), TaskStamp: string(embedded.StampOf(int(ti.Pid))), NetNS: c.NetNS,
	})
	os.Stdout.Write(append(out, '\n'))
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
}

// TestStaleRunCleanup: a run that died with its daemons, a running bot, a
// netns, a lease and a bridge is cleaned up completely by the next run.
func TestStaleRunCleanup(t *testing.T) {
	Get(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "TESTENV_ORPHAN=1")
	cmd.Stderr = os.Stderr
	out, _ := cmd.Output()
	var o orphan
	if err := json.Unmarshal(out, &o); err != nil {
		t.Fatalf("orphan output %q: %v", out, err)
	}
	for name, stamp := range map[string]string{"containerd": o.ContainerdStamp, "postgres": o.PostgresStamp, "task": o.TaskStamp} {
		if !embedded.Stamp(stamp).Alive() {
			t.Fatalf("the orphan's %s is not running; the test proves nothing", name)
		}
	}
	if _, err := net.InterfaceByName(o.Bridge); err != nil {
		t.Fatalf("orphan bridge %s missing: %v", o.Bridge, err)
	}
	if len(mountsUnder(o.Dir)) == 0 {
		t.Fatal("the orphan left no mounts; the test proves nothing")
	}

	cleanStale()

	for name, stamp := range map[string]string{"containerd": o.ContainerdStamp, "postgres": o.PostgresStamp, "task": o.TaskStamp} {
		if waitAlive(embedded.Stamp(stamp), 30*time.Second) {
			t.Errorf("the orphan's %s still runs after cleanup", name)
		}
	}
	if _, err := net.InterfaceByName(o.Bridge); err == nil {
		t.Errorf("bridge %s left", o.Bridge)
	}
	if m := mountsUnder(o.Dir); len(m) > 0 {
		t.Errorf("mounts left: %v", m)
	}
	if _, err := os.Stat(o.Dir); !os.IsNotExist(err) {
		t.Errorf("run dir %s left: %v", o.Dir, err)
	}
	if _, err := os.Stat(o.NetNS); !os.IsNotExist(err) {
		t.Errorf("netns %s left: %v", o.NetNS, err)
	}
}

// waitAlive reports whether s still runs after d.
func waitAlive(s embedded.Stamp, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for s.Alive() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	return s.Alive()
}

func TestStamp(t *testing.T) {
	s := embedded.StampOf(os.Getpid())
	if pid, ok := s.Pid(); !ok || pid != os.Getpid() {
		t.Fatalf("own stamp %q not alive", s)
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if embedded.StampOf(cmd.Process.Pid).Alive() {
		t.Fatal("an exited process reads as alive")
	}
	if embedded.Stamp("1 0").Alive() {
		t.Fatal("pid 1 with a wrong start time reads as alive")
	}
}

func TestDatabaseIsolated(t *testing.T) {
	e := Get(t)
	a, b := e.Database(t), e.Database(t)
	if a == b {
		t.Fatalf("two tests share database %s", a)
	}
}

// TestIPForwardTwoRunsEnding: two live runs release their networks one
// after the other (the first still alive, not yet gone, when the second
// releases): ip_forward is put back by the second, and the saved value
// removed. Before, each waited for the other while it was alive, and
// ip_forward stayed on (seen in CI: ip_forward.orig left behind).
func TestIPForwardTwoRunsEnding(t *testing.T) {
	root, fwd := Root, ipForwardPath
	t.Cleanup(func() { Root, ipForwardPath = root, fwd })
	Root, ipForwardPath = t.TempDir(), filepath.Join(t.TempDir(), "ip_forward")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(ipForwardPath, []byte("0\n"), 0o644))
	// Two runs, both alive: this process and a sleeping child.
	child := exec.Command("sleep", "60")
	must(child.Start())
	t.Cleanup(func() { child.Process.Kill(); child.Wait() })
	runs := map[int]NetInfo{}
	for _, pid := range []int{os.Getpid(), child.Process.Pid} {
		dir := filepath.Join(Root, "run"+strconv.Itoa(pid))
		must(os.Mkdir(dir, 0o755))
		must(os.WriteFile(filepath.Join(dir, "owner"), []byte(embedded.StampOf(pid)), 0o644))
		must(os.WriteFile(filepath.Join(dir, "net"), []byte("x y z\n"), 0o644))
		runs[pid] = NetInfo{Name: "mfs-iptest-none", runDir: dir}
	}
	must(os.WriteFile(filepath.Join(Root, "ip_forward.orig"), []byte("0\n"), 0o644))
	must(os.WriteFile(ipForwardPath, []byte("1\n"), 0o644)) // the bridge turned it on

	// The child's run releases first (as itself): this run still uses
	// the network, so ip_forward stays on.
	must(os.Remove(filepath.Join(runs[child.Process.Pid].runDir, "net")))
	must(restoreIPForward(child.Process.Pid))
	if b, _ := os.ReadFile(ipForwardPath); string(b) != "1\n" {
		t.Fatalf("ip_forward put back while a run still uses the network: %q", b)
	}
	// This run releases while the child is still alive: it is the last
	// user of the network.
	must(releaseNet(runs[os.Getpid()]))
	if b, _ := os.ReadFile(ipForwardPath); string(b) != "0\n" {
		t.Fatalf("ip_forward after the last run released: %q, want 0", b)
	}
	if _, err := os.Stat(filepath.Join(Root, "ip_forward.orig")); !os.IsNotExist(err) {
		t.Fatalf("ip_forward.orig left: %v", err)
	}
}

// TestWatchdog: a test binary that hangs ends before its -timeout,
// printing last the hung code's own frames (what CI's tail keeps).
func TestWatchdog(t *testing.T) {
	// Without the watchdog nothing would end the child (it never
	// reaches m.Run, which arms Go's own timeout): kill it late.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.timeout", "12s")
	cmd.Env = append(os.Environ(), "TESTENV_STUCK=1")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("the stuck binary ended with %v, want exit 1:\n%s", err, out)
	}
	if bytes.Contains(out, []byte("panic: test timed out")) {
		t.Fatalf("Go's timeout came first:\n%s", out)
	}
	i := bytes.Index(out, []byte("testenv: STUCK"))
	if i < 0 || !bytes.Contains(out[i:], []byte("stuckHere(")) {
		t.Fatalf("the report does not name the stuck frames:\n%s", out)
	}
}

// stuckMain is a test binary that hangs in test code, for TestWatchdog.
func stuckMain() {
	flag.Parse()
	watchdog()
	stuckHere()
}

func stuckHere() { select {} }

// TestTestStacks: the report keeps a goroutine with a frame in a test
// file, and drops the others and the watchdog's own.
func TestTestStacks(t *testing.T) {
	dump := strings.Join([]string{
		"goroutine 1 [chan receive]:\nmain.main()\n\t/x/_testmain.go:10 +0x1",
		"goroutine 7 [select]:\npkg.TestHang(0x1)\n\t/x/pkg/a_test.go:42 +0x2",
		"goroutine 9 [chan receive, locked to thread]:\npkg/creds.(*Pool).worker(0x1)\n\t/x/creds/creds.go:177 +0xc5",
		"goroutine 11 [running]:\ntestenv.stacks()\n\t/x/testenv/watchdog.go:60\ntestenv.stuck()\n\t/x/testenv/watchdog.go:40\ncreated by time.goFunc\n\t/x/a_test.go:1",
	}, "\n\n")
	got := string(testStacks([]byte(dump)))
	if got != "goroutine 7 [select]:\npkg.TestHang(0x1)\n\t/x/pkg/a_test.go:42 +0x2" {
		t.Fatalf("kept %q", got)
	}
}
