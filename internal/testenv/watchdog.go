package testenv

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"
)

// watchdogLead is how long before `go test -timeout` the watchdog acts,
// at most: a quarter of a shorter timeout.
const watchdogLead = 60 * time.Second

// watchdog ends a test binary that is about to hit -timeout itself, so
// what is stuck is the last thing printed: Go's own timeout panic names
// the running tests first and then dumps every goroutine, and a log that
// keeps only its tail (CI's) loses the names under the daemons' idle
// goroutines. Shortly before the deadline it writes the whole dump to a
// file, tears the stack down (bounded: a hung teardown must not eat the
// report), and prints the goroutines that are inside a test's own code,
// then exits 1.
//
// It does nothing without a -timeout.
func watchdog() {
	f := flag.Lookup("test.timeout")
	if f == nil {
		return
	}
	d, err := time.ParseDuration(f.Value.String())
	if err != nil || d <= 0 {
		return
	}
	lead := min(watchdogLead, d/4)
	time.AfterFunc(d-lead, func() { stuck(lead) })
}

func stuck(lead time.Duration) {
	all := stacks()
	dump := filepath.Join(os.TempDir(), fmt.Sprintf("testenv-stuck-%d.txt", os.Getpid()))
	if err := os.WriteFile(dump, all, 0o644); err != nil {
		dump = "(not written: " + err.Error() + ")"
	}
	done := make(chan error, 1)
	go func() { done <- teardown() }()
	select {
	case err := <-done:
		if err != nil {
			fmt.Fprintf(os.Stderr, "testenv: teardown: %v\n", err)
		}
	case <-time.After(lead / 2):
		fmt.Fprintf(os.Stderr, "testenv: teardown did not end in %v\n", lead/2)
	}
	fmt.Fprintf(os.Stderr, "\ntestenv: STUCK: this run was %v from its -timeout; every goroutine: %s\n", lead, dump)
	fmt.Fprintf(os.Stderr, "testenv: the goroutines in tests' own code (*_test.go):\n\n%s\n", testStacks(all))
	os.Exit(1)
}

// stacks is every goroutine's stack.
func stacks() []byte {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return buf[:n]
		}
		buf = make([]byte, 2*len(buf))
	}
}

// testStacks keeps the goroutines with a frame in a _test.go file.
func testStacks(all []byte) []byte {
	var out [][]byte
	for _, g := range bytes.Split(all, []byte("\n\n")) {
		if bytes.Contains(g, []byte("_test.go:")) && !bytes.Contains(g, []byte("testenv/watchdog.go")) {
			out = append(out, g)
		}
	}
	return bytes.Join(out, []byte("\n\n"))
}
