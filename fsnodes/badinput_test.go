package fsnodes_test

import (
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/memohfs/memohfs/fsnodes"
)

// TestBadInput: every refusal is a fitting errno, the reason is in err,
// and nothing changed.
func TestBadInput(t *testing.T) {
	s := newStack(t, fsnodes.Options{})
	must(t, os.Mkdir(s.path("bad"), 0o755))
	s.mustCtl("bad", "snapshot s1")
	before := s.status("bad")

	cases := []struct {
		name   string
		do     func() error
		errno  syscall.Errno
		reason string // in err; "" when the refusal has no bot to hold it
	}{
		{"unknown verb", func() error { return s.ctl("bad", "bogus\n") }, syscall.EINVAL, "unknown verb"},
		{"verb in a later line", func() error { return s.ctl("bad", "start\nbogus\n") }, syscall.EINVAL, "line 2"},
		{"bad stop seconds", func() error { return s.ctl("bad", "stop soon") }, syscall.EINVAL, "SECONDS"},
		{"extra argument", func() error { return s.ctl("bad", "start now") }, syscall.EINVAL, "usage"},
		{"snapshot bad name", func() error { return s.ctl("bad", "snapshot ../x") }, syscall.EINVAL, "snapshot name"},
		{"snapshot name with slash", func() error { return s.ctl("bad", "snapshot a/b") }, syscall.EINVAL, "snapshot name"},
		{"snapshot name taken", func() error { return s.ctl("bad", "snapshot s1") }, syscall.EEXIST, "exists"},
		{"restore missing", func() error { return s.ctl("bad", "restore nope") }, syscall.ENOENT, "not found"},
		{"restore without name", func() error { return s.ctl("bad", "restore") }, syscall.EINVAL, "usage: restore NAME"},
		{"mkdir snapshot bad name", func() error { return os.Mkdir(s.path("bad", "snapshots", "-x"), 0o755) }, syscall.EINVAL, ""},
		{"mkdir snapshot taken", func() error { return os.Mkdir(s.path("bad", "snapshots", "s1"), 0o755) }, syscall.EEXIST, ""},
		{"rmdir missing snapshot", func() error { return os.Remove(s.path("bad", "snapshots", "nope")) }, syscall.ENOENT, ""},
		{"bot name 100 chars", func() error { return os.Mkdir(s.path(strings.Repeat("a", 100)), 0o755) }, syscall.EINVAL, ""},
		{"bot name upper case", func() error { return os.Mkdir(s.path("Bad"), 0o755) }, syscall.EINVAL, ""},
		{"bot name with slash", func() error { return os.Mkdir(s.path("nobot", "x"), 0o755) }, syscall.ENOENT, ""},
		{"bot name dot dot", func() error { return os.Mkdir(s.mnt+"/..", 0o755) }, syscall.EEXIST, ""},
		{"bot exists", func() error { return os.Mkdir(s.path("bad"), 0o755) }, syscall.EEXIST, ""},
		{"ctl of unknown bot", func() error { return os.WriteFile(s.path("nobot", "ctl"), []byte("start"), 0) }, syscall.ENOENT, ""},
		{"rmdir unknown bot", func() error { return os.Remove(s.path("nobot")) }, syscall.ENOENT, ""},
		{"create a file at the top", func() error { return os.WriteFile(s.path("file"), nil, 0o644) }, syscall.EROFS, ""},
		{"write status", func() error { return os.WriteFile(s.path("bad", "status"), []byte("x"), 0) }, syscall.EACCES, ""},
	}
	for _, c := range cases {
		err := c.do()
		if !errnoIs(err, c.errno) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.errno)
			continue
		}
		if c.reason != "" {
			if msg := s.read("bad", "err"); !strings.Contains(msg, c.reason) {
				t.Errorf("%s: err says %q, want %q in it", c.name, msg, c.reason)
			}
		}
		if after := s.status("bad"); after["state"] != before["state"] || after["snapshots"] != before["snapshots"] {
			t.Errorf("%s changed the bot: %v -> %v", c.name, before, after)
		}
	}

	// rmdir of a running bot.
	s.mustCtl("bad", "start")
	if err := os.Remove(s.path("bad")); !errnoIs(err, syscall.EBUSY) {
		t.Fatalf("rmdir running: %v", err)
	}
	if msg := s.read("bad", "err"); !strings.Contains(msg, "stop it first") {
		t.Fatalf("err after rmdir of a running bot: %q", msg)
	}
	if st := s.status("bad"); st["state"] != "running" {
		t.Fatalf("rmdir changed a running bot: %v", st)
	}
	// A success clears err.
	s.mustCtl("bad", "stop")
	if msg := s.read("bad", "err"); msg != "" {
		t.Fatalf("err after a success: %q", msg)
	}
	entries, _ := os.ReadDir(s.mnt)
	if len(entries) != 1 {
		t.Fatalf("refused mkdirs left entries: %v", entries)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
