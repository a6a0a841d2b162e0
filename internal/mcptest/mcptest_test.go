package mcptest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestRoundTrip builds the server, runs it directly (no container) in a
// directory of its own with a random MEMOHFS_TEST_ENV, and checks every
// field of the Result against independently written expectations, plus the
// server's exit status (0 only on a clean stdin-EOF shutdown).
func TestRoundTrip(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	bin, err := BuildServer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(bin) != "mcp-server" || !filepath.IsAbs(bin) {
		t.Errorf("BuildServer returned %q, want an absolute path ending in /mcp-server", bin)
	}
	if err := checkStatic(bin); err != nil {
		t.Errorf("server binary: %v", err)
	}

	// A fresh, distinct working directory and a random token: a server
	// that did not run with this cmd's Dir and Env cannot report them.
	wd := t.TempDir()
	if real, err := filepath.EvalSymlinks(wd); err == nil {
		wd = real
	}
	token := make([]byte, 8)
	if _, err := rand.Read(token); err != nil {
		t.Fatal(err)
	}
	envVal := "memohfs-" + hex.EncodeToString(token)

	cmd := exec.Command(bin)
	cmd.Dir = wd
	cmd.Env = append(os.Environ(), "MEMOHFS_TEST_ENV="+envVal)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	got, err := RoundTrip(ctx, cmd)
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("RoundTrip: %v\nserver stderr:\n%s", err, stderr.String())
	}
	t.Logf("round trip took %v; result: %+v", elapsed, got)

	if got.ServerName != "memohfs-test" {
		t.Errorf("ServerName = %q, want %q", got.ServerName, "memohfs-test")
	}
	if want := []string{"add", "echo", "whoami"}; !slices.Equal(got.Tools, want) {
		t.Errorf("Tools = %q, want %q", got.Tools, want)
	}
	if got.Echo != "hello from memohfs" {
		t.Errorf("Echo = %q, want %q", got.Echo, "hello from memohfs")
	}
	if got.Sum != "42" {
		t.Errorf("Sum = %q, want %q", got.Sum, "42")
	}
	if want := wd + "\n" + envVal; got.WhoAmI != want {
		t.Errorf("WhoAmI = %q, want %q", got.WhoAmI, want)
	}

	// Close must have reaped the server, and it must have exited 0 by
	// itself on stdin EOF (SIGTERM makes it exit 2, SIGKILL is a signal
	// death; either would also have made RoundTrip fail).
	if cmd.ProcessState == nil {
		t.Fatal("server process was not waited for")
	}
	if !cmd.ProcessState.Exited() || cmd.ProcessState.ExitCode() != 0 {
		t.Errorf("server exit status = %v, want exit 0", cmd.ProcessState)
	}
	if elapsed >= 5*time.Second {
		t.Errorf("round trip took %v: did Close have to signal the server?", elapsed)
	}
	if s := stderr.String(); s != "" {
		t.Errorf("server wrote to stderr:\n%s", s)
	}
}

// TestRoundTripFailsOnNonMCPCommand guards against RoundTrip reporting
// success for a command that is not an MCP server: this test binary, run
// with no tests selected, prints plain text to stdout and exits.
func TestRoundTripFailsOnNonMCPCommand(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^$")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got, err := RoundTrip(ctx, cmd)
	if err == nil {
		t.Fatalf("RoundTrip succeeded against a non-MCP command: %+v", got)
	}
	t.Logf("RoundTrip error (expected): %v", err)
	if !strings.Contains(err.Error(), "connect/initialize") {
		t.Errorf("error %q does not name the connect/initialize step", err)
	}
	if got.ServerName != "" || got.Tools != nil || got.Echo != "" || got.Sum != "" || got.WhoAmI != "" {
		t.Errorf("Result after failed connect = %+v, want zero", got)
	}
}
