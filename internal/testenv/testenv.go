// Package testenv runs the real stack for integration tests: one private
// containerd daemon and one private Postgres cluster per `go test` package
// run, a bridge and subnet of the run's own, a containerd namespace and a
// database per test. Everything lives under one short directory
// (/tmp/mfs-test/<id>) and is torn down in order at the end: tasks,
// containers, CNI, netns, mounts, the daemons by pid, the bridge, and
// ip_forward as it was. A run that died is cleaned up by the next one.
//
// Use it from TestMain:
//
//	func TestMain(m *testing.M) { testenv.Main(m, testenv.Needs{Containerd: true}) }
//
// With CI set in the environment a missing dependency fails the run instead
// of skipping its tests.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/memohfs/memohfs/internal/embedded"
	"github.com/memohfs/memohfs/runtime/ociimage"
)

// Root holds the run directories. Short on purpose: shim sockets live
// under it and unix socket paths are limited to 108 bytes.
var Root = envOr("MEMOHFS_TEST_ROOT", "/tmp/mfs-test")

// Needs says which parts of the stack a package's tests use.
type Needs struct {
	Containerd bool
	Postgres   bool
	// Network alone: a bridge name and subnet of the run's own, for tests
	// that run a whole memohfs (which starts its own containerd).
	Network bool
}

// Env is the package run's stack.
type Env struct {
	ID  string // short run id
	Dir string // run directory

	Containerd *Containerd // nil unless needed
	Postgres   *Postgres   // nil unless needed
	Net        NetInfo
	// ImageArchive is the default bot image as an OCI layout tar, built
	// once per run by the project's own image writer.
	ImageArchive string

	seq atomic.Int64
}

var (
	env       *Env
	envErr    error // why the stack is unavailable
	teardowns []func() error
	mu        sync.Mutex
)

// CI reports whether missing dependencies must fail instead of skip.
func CI() bool { return os.Getenv("CI") != "" && os.Getenv("CI") != "false" }

// Main sets up the stack, runs the tests, tears the stack down and exits.
func Main(m *testing.M, needs Needs) {
	if fuzzing() {
		// Fuzz targets are pure logic, and every fuzz worker process
		// runs TestMain: no daemons for them.
		os.Exit(m.Run())
	}
	code := run(m, needs)
	os.Exit(code)
}

// fuzzing says whether this test binary runs a fuzz target (the
// coordinator or a worker), not the tests.
func fuzzing() bool {
	if !flag.Parsed() {
		flag.Parse()
	}
	for _, name := range []string{"test.fuzz", "test.fuzzworker"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" && f.Value.String() != "false" {
			return true
		}
	}
	return false
}

func run(m *testing.M, needs Needs) (code int) {
	if !flag.Parsed() {
		flag.Parse()
	}
	watchdog()
	env, envErr = setup(needs)
	if envErr != nil {
		fmt.Fprintf(os.Stderr, "testenv: %v\n", envErr)
	}
	defer func() {
		if err := teardown(); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: teardown: %v\n", err)
			code = 1
		}
	}()
	if envErr != nil && CI() {
		fmt.Fprintf(os.Stderr, "testenv: CI is set: a missing dependency is a failure\n")
		return 1
	}
	return m.Run()
}

// Get returns the run's stack, or skips the test (fails it under CI) when
// it could not be set up.
func Get(t testing.TB) *Env {
	t.Helper()
	if env == nil {
		msg := "testenv: stack unavailable (run via `make test`)"
		if envErr != nil {
			msg = "testenv: " + envErr.Error()
		}
		if CI() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return env
}

func setup(needs Needs) (*Env, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("integration tests need root (containerd, CNI, FUSE)")
	}
	if err := os.MkdirAll(Root, 0o755); err != nil {
		return nil, err
	}
	if err := os.Chmod(Root, 0o755); err != nil {
		return nil, err
	}
	// The stale cleanup and this run's dir under one hold of the root
	// lock: another run's cleanup never sees the dir before its owner
	// stamp is written.
	unlock, err := lockRoot()
	if err != nil {
		return nil, err
	}
	cleanStaleLocked()
	e := &Env{}
	e.ID, e.Dir, err = newRunDir()
	unlock()
	if err != nil {
		return nil, err
	}
	pushTeardown(func() error { return removeRunDir(e.Dir) })

	e.ImageArchive = filepath.Join(e.Dir, "bot-image.tar")
	if _, err := ociimage.WriteFile(e.ImageArchive, ociimage.Options{}); err != nil {
		return nil, fmt.Errorf("build bot image: %w", err)
	}
	if needs.Containerd || needs.Network {
		if e.Net, err = allocateNet(e.ID, e.Dir); err != nil {
			return nil, err
		}
		pushTeardown(func() error { return releaseNet(e.Net) })
	}
	if needs.Containerd {
		if e.Containerd, err = startContainerd(e.Dir); err != nil {
			return nil, err
		}
		pushTeardown(func() error { return e.Containerd.stop() })
		// These run before the daemon stops: sweep whatever tests left
		// (tasks, containers, CNI), then the netns pins and mounts.
		pushTeardown(func() error { unmountUnder(filepath.Join(e.Dir, "t")); return nil })
		pushTeardown(func() error { return e.Containerd.sweepAll(e.Net) })
	}
	if needs.Postgres {
		if e.Postgres, err = startPostgres(filepath.Join(e.Dir, "pg")); err != nil {
			return nil, err
		}
		pushTeardown(func() error { return e.Postgres.Stop() })
	}
	return e, nil
}

func pushTeardown(f func() error) {
	mu.Lock()
	defer mu.Unlock()
	teardowns = append(teardowns, f)
}

// teardown runs the registered steps last-in first-out, all of them, and
// joins their errors.
func teardown() error {
	mu.Lock()
	steps := teardowns
	teardowns = nil
	mu.Unlock()
	var errs []string
	for i := len(steps) - 1; i >= 0; i-- {
		if err := steps[i](); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

var nameRE = regexp.MustCompile(`[^a-z0-9]+`)

// unique returns a per-test name: a prefix, a counter and the test's name,
// squeezed to [a-z0-9-] and at most max bytes.
func (e *Env) unique(t testing.TB, prefix string, max int) string {
	n := e.seq.Add(1)
	base := strings.Trim(nameRE.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	s := fmt.Sprintf("%s%d-%s", prefix, n, base)
	if len(s) > max {
		s = strings.TrimRight(s[:max], "-")
	}
	return s
}

// TempDir returns a fresh directory under the run dir (short paths, and
// swept with the run if the test process dies).
func (e *Env) TempDir(t testing.TB) string {
	t.Helper()
	d := filepath.Join(e.Dir, "t", fmt.Sprint(e.seq.Add(1)))
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unmountUnder(d)
		os.RemoveAll(d)
	})
	return d
}

func newRunDir() (id, dir string, err error) {
	for range 10 {
		var b [3]byte
		_, _ = rand.Read(b[:])
		id = hex.EncodeToString(b[:])
		dir = filepath.Join(Root, id)
		if err = os.Mkdir(dir, 0o755); err == nil {
			err = os.WriteFile(filepath.Join(dir, "owner"), []byte(embedded.StampOf(os.Getpid())), 0o644)
			return id, dir, err
		}
		if !os.IsExist(err) {
			return "", "", err
		}
	}
	return "", "", err
}

// ContainerdVersion is the containerd module version go.mod pins (test
// binaries carry no dependency build info, so go.mod is read).
func ContainerdVersion() string {
	b, err := os.ReadFile(filepath.Join(moduleRoot(), "go.mod"))
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "require "))
		if len(f) >= 2 && f[0] == "github.com/containerd/containerd/v2" {
			return f[1]
		}
	}
	return ""
}

// moduleRoot finds the directory holding go.mod above the working dir.
func moduleRoot() string {
	dir, _ := os.Getwd()
	for d := dir; d != "/" && d != "."; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
	}
	return dir
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func lookPath(name string, extra ...string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range extra {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

func ctxTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
