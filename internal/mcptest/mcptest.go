// Package mcptest is a small test kit for a real MCP (Model Context Protocol)
// round trip over the stdio transport.
//
// BuildServer compiles a tiny, fully static MCP server (./server, built with
// CGO_ENABLED=0 so it runs even in a libc-less busybox container), and
// RoundTrip drives any command that runs that server — directly on the host,
// or wrapped in a container runtime — with the official Go SDK client
// (github.com/modelcontextprotocol/go-sdk): it initializes a session, lists
// the tools, calls each of them, closes the session and reports what it saw.
// Tests then compare the Result against known values to prove that the
// server really ran, and where (see the whoami tool).
package mcptest

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Values sent by RoundTrip.
const (
	// EchoText is the text RoundTrip sends to the echo tool.
	EchoText = "hello from memohfs"
	// AddA and AddB are the arguments RoundTrip sends to the add tool.
	AddA, AddB = 40, 2
)

// legacyProtocolVersion pins the client to the classic initialize handshake.
// With no version set, SDK v1.8.0 first tries the stateless SEP-2575
// server/discover RPC (protocol 2026-07-28) and only falls back to initialize
// if the server refuses it; pinning keeps this kit exercising the handshake
// that every stdio MCP server implements.
const legacyProtocolVersion = "2025-11-25"

// serverBinary is the file name BuildServer writes into its dir.
const serverBinary = "mcp-server"

// BuildServer builds the test MCP server (./internal/mcptest/server) into
// dir/mcp-server and returns that path. The binary is built with
// CGO_ENABLED=0 -trimpath -ldflags="-s -w" and is checked to be fully static
// (no ELF interpreter, no shared-library dependencies).
func BuildServer(dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", fmt.Errorf("mcptest: locating module root: %w", err)
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("mcptest: %w", err)
	}
	out, err := filepath.Abs(filepath.Join(dir, serverBinary))
	if err != nil {
		return "", fmt.Errorf("mcptest: %w", err)
	}
	cmd := exec.Command(goTool, "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./internal/mcptest/server")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("mcptest: go build ./internal/mcptest/server: %w\n%s", err, b)
	}
	if err := checkStatic(out); err != nil {
		return "", fmt.Errorf("mcptest: %s: %w", out, err)
	}
	return out, nil
}

// moduleRoot returns the directory holding this module's go.mod: from this
// source file's path when it is available (not under -trimpath), otherwise
// from `go env GOMOD` run in the current directory.
func moduleRoot() (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		root := filepath.Join(filepath.Dir(file), "..", "..")
		if _, err := os.Stat(filepath.Join(root, "internal", "mcptest", "server", "main.go")); err == nil {
			return filepath.Clean(root), nil
		}
	}
	b, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(b))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module")
	}
	root := filepath.Dir(gomod)
	if _, err := os.Stat(filepath.Join(root, "internal", "mcptest", "server", "main.go")); err != nil {
		return "", fmt.Errorf("module at %s has no internal/mcptest/server: %w", root, err)
	}
	return root, nil
}

// checkStatic reports an error if the ELF file at path needs a dynamic
// loader or shared libraries. Non-ELF files (other GOOS) are not checked.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		var fe *elf.FormatError
		if errors.As(err, &fe) {
			return nil
		}
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		// PT_DYNAMIC alone is fine (static-pie); an interpreter is not.
		if p.Type == elf.PT_INTERP {
			return errors.New("not statically linked (has a PT_INTERP program header)")
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return fmt.Errorf("reading DT_NEEDED: %w", err)
	}
	if len(libs) > 0 {
		return fmt.Errorf("not statically linked (needs %v)", libs)
	}
	return nil
}

// Result is what RoundTrip observed.
type Result struct {
	ServerName string   // serverInfo.name from the initialize result
	Tools      []string // names of the listed tools, sorted
	Echo       string   // text returned by echo{text: EchoText}
	Sum        string   // text returned by add{a: AddA, b: AddB}
	WhoAmI     string   // text returned by whoami: server's cwd + "\n" + $MEMOHFS_TEST_ENV
}

// RoundTrip runs cmd (which must not have been started, and must leave
// Stdin and Stdout unset) as an MCP stdio server using the SDK's
// CommandTransport, and: initializes the session, lists the tools, calls
// echo, add and whoami, and closes the session. Closing closes the server's
// stdin and waits for it to exit (the SDK sends SIGTERM, then SIGKILL, after
// 5s each if it does not); a non-zero exit is reported as an error.
//
// Errors name the step that failed. On error the Result holds whatever was
// observed before the failure.
func RoundTrip(ctx context.Context, cmd *exec.Cmd) (res Result, err error) {
	client := mcp.NewClient(&mcp.Implementation{Name: "memohfs-mcptest", Version: "v0.0.1"}, nil)
	cs, err := client.Connect(ctx, &mcp.CommandTransport{Command: cmd},
		&mcp.ClientSessionOptions{ProtocolVersion: legacyProtocolVersion})
	if err != nil {
		// On an initialize failure the SDK has already closed the session,
		// which closed stdin and reaped the process.
		return res, fmt.Errorf("mcptest: connect/initialize: %w", err)
	}
	closed := false
	defer func() {
		if !closed {
			if cerr := cs.Close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("mcptest: close session: %w", cerr))
			}
		}
	}()

	if ir := cs.InitializeResult(); ir != nil && ir.ServerInfo != nil {
		res.ServerName = ir.ServerInfo.Name
	}

	for tool, err := range cs.Tools(ctx, nil) {
		if err != nil {
			return res, fmt.Errorf("mcptest: list tools: %w", err)
		}
		res.Tools = append(res.Tools, tool.Name)
	}
	slices.Sort(res.Tools)

	if res.Echo, err = callText(ctx, cs, "echo", map[string]any{"text": EchoText}); err != nil {
		return res, err
	}
	if res.Sum, err = callText(ctx, cs, "add", map[string]any{"a": AddA, "b": AddB}); err != nil {
		return res, err
	}
	if res.WhoAmI, err = callText(ctx, cs, "whoami", nil); err != nil {
		return res, err
	}

	closed = true
	if err := cs.Close(); err != nil {
		return res, fmt.Errorf("mcptest: close session: %w", err)
	}
	return res, nil
}

// callText calls a tool and returns its result, which must be exactly one
// text content and not a tool error.
func callText(ctx context.Context, cs *mcp.ClientSession, name string, args map[string]any) (string, error) {
	r, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		return "", fmt.Errorf("mcptest: call tool %s: %w", name, err)
	}
	if r.IsError {
		var msg strings.Builder
		for _, c := range r.Content {
			if t, ok := c.(*mcp.TextContent); ok {
				msg.WriteString(t.Text)
			}
		}
		return "", fmt.Errorf("mcptest: call tool %s: tool error: %s", name, msg.String())
	}
	if len(r.Content) != 1 {
		return "", fmt.Errorf("mcptest: call tool %s: got %d content items, want 1", name, len(r.Content))
	}
	t, ok := r.Content[0].(*mcp.TextContent)
	if !ok {
		return "", fmt.Errorf("mcptest: call tool %s: got %T content, want *mcp.TextContent", name, r.Content[0])
	}
	return t.Text, nil
}
