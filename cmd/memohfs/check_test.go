package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/memohfs/memohfs/internal/testenv"
)

// TestCheckUnrecordedData: a bot data dir and a snapshot data dir with no
// bot record (a secret planted in each, as a crash would leave them) make
// `memohfs check` exit 1 naming both. A non-root user's mkdir of the
// first name through the mount gets an empty data/, never the secret; the
// next up's reconcile moves the second to the trash; check passes again.
func TestCheckUnrecordedData(t *testing.T) {
	env := testenv.Get(t)
	state, mnt := upInstance(t)
	d := startUp(t, state, mnt, "--allow-other")
	reconciled := func(n int) func() bool {
		return func() bool { return strings.Count(readFile(d.log), "msg=reconcile ") >= n }
	}
	eventually(t, 60*time.Second, "reconcile after up", reconciled(1))
	if out, err := runCheckBin(t, env, state, mnt); err != nil {
		t.Fatalf("check of a clean instance: %v\n%s", err, out)
	}

	data := filepath.Join(state, "data")
	planted := []string{filepath.Join(data, "bots", "ghost"), filepath.Join(data, "snapshots", "ghost2")}
	for _, dir := range planted {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "secret"), []byte("left by a crash"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := runCheckBin(t, env, state, mnt)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("check with unrecorded data: %v, want exit status 1\n%s", err, out)
	}
	for _, dir := range planted {
		if !strings.Contains(out, dir+" has no bot record") {
			t.Fatalf("check does not name %s:\n%s", dir, out)
		}
	}

	got, err := testenv.AsUser(2002, mnt, `mkdir $M/ghost && ls -A $M/ghost/data && stat -c %u $M/ghost/data`)
	if err != nil || got != ".skills\n2002\n" {
		t.Fatalf("mkdir of a name with unrecorded data, as uid 2002: %v\n%q, want only .skills, owned by 2002", err, got)
	}
	if m, _ := filepath.Glob(filepath.Join(data, "trash", "ghost-*", "data", "secret")); len(m) != 1 {
		t.Fatalf("the stale data dir is not in the trash: %v", m)
	}

	d.stop()
	d = startUp(t, state, mnt, "--allow-other")
	eventually(t, 60*time.Second, "reconcile after the second up", reconciled(2))
	out, err = runCheckBin(t, env, state, mnt)
	if err != nil {
		t.Fatalf("check after reconcile: %v\n%s", err, out)
	}
	// The two trash entries (ghost's data, ghost2's snapshots), each with
	// its 15-byte secret in a 4 KiB block, plus their dirs.
	if !regexp.MustCompile(`\n  trash: 2 entries, 0\.[0-9] MiB, the oldest from 20`).MatchString(out) {
		t.Fatalf("check does not report the trash:\n%s", out)
	}
	if m, _ := filepath.Glob(filepath.Join(data, "trash", "ghost2-*", "snapshots", "secret")); len(m) != 1 {
		t.Fatalf("reconcile did not move the unrecorded snapshot dir to the trash: %v", m)
	}
	if _, err := os.Stat(planted[1]); !os.IsNotExist(err) {
		t.Fatalf("%s still there: %v", planted[1], err)
	}
	d.stop()
}
