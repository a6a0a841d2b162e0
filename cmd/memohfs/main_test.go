package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/memohfs/memohfs/internal/embedded"
	"github.com/memohfs/memohfs/internal/testenv"
	"github.com/memohfs/memohfs/mount"
)

func TestMain(m *testing.M) {
	if bot := os.Getenv(ninePChildEnv); bot != "" {
		os.Exit(ninePChild(bot)) // `memohfs dial ... -- <this binary>` (ninep_test.go)
	}
	testenv.Main(m, testenv.Needs{Network: true})
}

var built struct {
	once sync.Once
	path string
	err  error
}

// binary builds memohfs once per run, as `make build` does.
func binary(t *testing.T) string {
	t.Helper()
	env := testenv.Get(t)
	built.once.Do(func() {
		built.path = filepath.Join(env.Dir, "memohfs")
		out, err := exec.Command("go", "build", "-o", built.path, ".").CombinedOutput()
		if err != nil {
			built.err = err
			built.path = string(out)
		}
	})
	if built.err != nil {
		t.Fatalf("go build: %v\n%s", built.err, built.path)
	}
	return built.path
}

// upProcess is one `memohfs up` process.
type upProcess struct {
	t          *testing.T
	cmd        *exec.Cmd
	state, mnt string
	log        string
	exited     chan struct{}
}

func startUp(t *testing.T, state, mnt string, extra ...string) *upProcess {
	t.Helper()
	env := testenv.Get(t)
	bin, err := testenv.ContainerdBinDir()
	if err != nil {
		t.Fatal(err)
	}
	d := &upProcess{t: t, state: state, mnt: mnt, log: filepath.Join(filepath.Dir(state), "up.log"), exited: make(chan struct{})}
	logf, err := os.OpenFile(d.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	d.cmd = exec.Command(binary(t), "up", "--mount", mnt, "--state-dir", state, "--containerd-bin", bin,
		"--bridge", env.Net.Bridge, "--subnet", env.Net.Subnet)
	// This run's data/ path, whatever up's default (extra may say
	// otherwise: the last --data-binds wins).
	d.cmd.Args = append(d.cmd.Args, fmt.Sprintf("--data-binds=%t", testenv.DataBinds()))
	d.cmd.Args = append(d.cmd.Args, extra...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	// The log so far: this up has served once it logs msg=serving after
	// it. A mount that answers is not enough: twice (TestUpKill9, then
	// TestBindsKill9) the mount the last, killed up left answered statfs
	// and a listing before this up had even cleared it (not explained).
	before, err := logf.Seek(0, io.SeekEnd)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.cmd.Wait(); close(d.exited) }()
	serving := func() bool {
		b, err := os.ReadFile(d.log)
		return err == nil && int64(len(b)) > before &&
			(bytes.Contains(b[before:], []byte("msg=serving ")) || bytes.Contains(b[before:], []byte(`"msg":"serving"`))) // --log-format text or json
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		if st, _ := mount.Check(mnt); st == mount.Mounted && serving() {
			if _, err := os.ReadDir(mnt); err == nil {
				return d
			}
		}
		select {
		case <-d.exited:
			t.Fatalf("memohfs up exited: %v\n%s", d.cmd.ProcessState, embedded.Tail(d.log, 30))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("memohfs up did not mount within 90s:\n%s", embedded.Tail(d.log, 30))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits for the process to exit.
func (d *upProcess) stop() {
	d.t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(60 * time.Second):
		d.t.Fatalf("memohfs up did not exit within 60s of SIGTERM:\n%s", embedded.Tail(d.log, 30))
	}
	if !d.cmd.ProcessState.Success() {
		d.t.Fatalf("memohfs up exited with %v:\n%s", d.cmd.ProcessState, embedded.Tail(d.log, 30))
	}
}

// upInstance gives a test a state dir and mount point, and cleans up
// whatever is left when it ends (testenv.Env.UpInstance).
func upInstance(t *testing.T) (state, mnt string) {
	t.Helper()
	return testenv.Get(t).UpInstance(t)
}

func sh(t *testing.T, script string) string {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Dir = "/"
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out.String())
	}
	return out.String()
}

func statusOf(t *testing.T, mnt, bot string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(mnt, bot, "status"))
	if err != nil {
		t.Fatal(err)
	}
	kv := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		k, v, _ := strings.Cut(l, " ")
		kv[k] = v
	}
	return kv
}
