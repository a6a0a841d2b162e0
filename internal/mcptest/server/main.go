// Command server is a tiny MCP (Model Context Protocol) server speaking the
// stdio transport, used by package mcptest to exercise a real round trip.
//
// It serves three tools:
//
//   - echo   {"text": string}    -> text content equal to text
//   - add    {"a": int, "b": int} -> text content with the decimal sum
//   - whoami {}                  -> working directory + "\n" + $MEMOHFS_TEST_ENV
//
// It exits 0 when stdin reaches EOF (the stdio transport's normal shutdown).
// If it is asked to stop by SIGTERM or SIGINT instead, it exits 2, so that a
// client can tell a clean EOF shutdown from a forced one.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// serverName is the implementation name reported to clients (serverInfo.name).
const serverName = "memohfs-test"

type echoArgs struct {
	Text string `json:"text" jsonschema:"the text to echo back"`
}

type addArgs struct {
	A int `json:"a" jsonschema:"first addend"`
	B int `json:"b" jsonschema:"second addend"`
}

type whoamiArgs struct{}

func text(s string) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
}

func newServer() *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: serverName, Version: "v0.0.1"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "echo", Description: "returns its text argument"},
		func(_ context.Context, _ *mcp.CallToolRequest, in echoArgs) (*mcp.CallToolResult, any, error) {
			return text(in.Text), nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "add", Description: "returns the decimal sum a+b"},
		func(_ context.Context, _ *mcp.CallToolRequest, in addArgs) (*mcp.CallToolResult, any, error) {
			return text(strconv.Itoa(in.A + in.B)), nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "whoami", Description: "returns the working directory and $MEMOHFS_TEST_ENV, newline-separated"},
		func(_ context.Context, _ *mcp.CallToolRequest, _ whoamiArgs) (*mcp.CallToolResult, any, error) {
			wd, err := os.Getwd()
			if err != nil {
				return nil, nil, fmt.Errorf("getwd: %w", err)
			}
			return text(wd + "\n" + os.Getenv("MEMOHFS_TEST_ENV")), nil, nil
		})
	return s
}

func main() {
	// Handling SIGTERM explicitly also matters when this binary is PID 1 in a
	// container, where the kernel would otherwise ignore the signal.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	// Run returns nil when the client closes stdin (EOF).
	err := newServer().Run(ctx, &mcp.StdioTransport{})
	switch {
	case err == nil:
		os.Exit(0)
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(os.Stderr, "memohfs-test mcp server: stopped by signal")
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "memohfs-test mcp server:", err)
		os.Exit(1)
	}
}
