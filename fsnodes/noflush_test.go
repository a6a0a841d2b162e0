package fsnodes_test

import (
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/memohfs/memohfs/fsnodes"
)

// TestNoFlush: a close on the mount is not a round trip. Every open and
// create is answered with NOFLUSH, so closing a data/ file, ctl, status
// or err (from this process and from a shell) sends no FLUSH. A FLUSH
// would also be the one request a vforked child of the serving process
// waits on at exec (see noflush.go).
func TestNoFlush(t *testing.T) {
	var logs syncBuffer
	// The FUSE path: with binds, data/ files are not opened through FUSE.
	s := newStackOn(t, fsnodes.Options{Debug: true, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	s.Mkbot("nf")
	must(t, os.WriteFile(s.Path("nf", "data", "f"), []byte("x"), 0o644)) // create
	for i := 0; i < 3; i++ {
		if _, err := os.ReadFile(s.Path("nf", "data", "f")); err != nil { // open
			t.Fatal(err)
		}
		s.Read("nf", "status")
		s.Read("nf", "err")
	}
	if err := s.Ctl("nf", "nosuchverb"); err == nil {
		t.Fatal("a bad verb was taken")
	}
	s.MustSh(`cat $M/nf/data/f $M/nf/status >/dev/null; echo y >>$M/nf/data/f; : >$M/nf/data/g`)
	// From the mount on: go-fuse's own poll probe during the mount
	// (".go-fuse-epoll-hack") is answered by go-fuse itself.
	log := logs.String()
	if i := strings.Index(log, "data/ file I/O"); i >= 0 {
		log = log[i:]
	} else {
		t.Fatalf("no mount line in the log\n%s", tail(log, 3000))
	}
	opens := strings.Count(log, ": OPEN ") + strings.Count(log, ": CREATE ")
	noflush := strings.Count(log, "NOFLUSH")
	t.Logf("%d opens and creates, %d answered NOFLUSH", opens, noflush)
	if opens < 10 {
		t.Fatalf("only %d OPEN or CREATE requests seen: the log is not what this test reads\n%s", opens, tail(log, 3000))
	}
	if noflush < opens {
		t.Errorf("%d of %d opens and creates answered without NOFLUSH\n%s", opens-noflush, opens, around(log, ": OPEN ", 1))
	}
	if n := strings.Count(log, ": FLUSH "); n > 0 {
		t.Errorf("%d FLUSH requests reached the daemon\n%s", n, around(log, ": FLUSH ", 8))
	}
}

// around gives the lines of log before and after each line with s.
func around(log, s string, n int) string {
	lines := strings.Split(log, "\n")
	var out []string
	for i, l := range lines {
		if strings.Contains(l, s) {
			out = append(out, lines[max(0, i-n):min(len(lines), i+n)]...)
			out = append(out, "--")
		}
	}
	return strings.Join(out, "\n")
}
