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
	must(t, os.Mkdir(s.Path("bad"), 0o755))
	s.MustCtl("bad", "snapshot s1")
	before := s.StatusFields("bad")

	cases := []struct {
		name   string
		do     func() error
		errno  syscall.Errno
		reason string // in err; "" when the refusal has no bot to hold it
	}{
		{"unknown verb", func() error { return s.Ctl("bad", "bogus\n") }, syscall.EINVAL, "unknown verb"},
		{"verb in a later line", func() error { return s.Ctl("bad", "start\nbogus\n") }, syscall.EINVAL, "line 2"},
		{"bad stop seconds", func() error { return s.Ctl("bad", "stop soon") }, syscall.EINVAL, "SECONDS"},
		{"extra argument", func() error { return s.Ctl("bad", "start now") }, syscall.EINVAL, "usage"},
		{"snapshot bad name", func() error { return s.Ctl("bad", "snapshot ../x") }, syscall.EINVAL, "snapshot name"},
		{"snapshot name with slash", func() error { return s.Ctl("bad", "snapshot a/b") }, syscall.EINVAL, "snapshot name"},
		{"snapshot name taken", func() error { return s.Ctl("bad", "snapshot s1") }, syscall.EEXIST, "exists"},
		{"restore missing", func() error { return s.Ctl("bad", "restore nope") }, syscall.ENOENT, "not found"},
		{"restore without name", func() error { return s.Ctl("bad", "restore") }, syscall.EINVAL, "usage: restore NAME"},
		{"mkdir snapshot bad name", func() error { return os.Mkdir(s.Path("bad", "snapshots", "-x"), 0o755) }, syscall.EINVAL, ""},
		{"mkdir snapshot taken", func() error { return os.Mkdir(s.Path("bad", "snapshots", "s1"), 0o755) }, syscall.EEXIST, ""},
		{"rmdir missing snapshot", func() error { return os.Remove(s.Path("bad", "snapshots", "nope")) }, syscall.ENOENT, ""},
		{"bot name 100 chars", func() error { return os.Mkdir(s.Path(strings.Repeat("a", 100)), 0o755) }, syscall.EINVAL, ""},
		{"bot name upper case", func() error { return os.Mkdir(s.Path("Bad"), 0o755) }, syscall.EINVAL, ""},
		{"bot name with slash", func() error { return os.Mkdir(s.Path("nobot", "x"), 0o755) }, syscall.ENOENT, ""},
		{"bot name dot dot", func() error { return os.Mkdir(s.Mnt+"/..", 0o755) }, syscall.EEXIST, ""},
		{"bot exists", func() error { return os.Mkdir(s.Path("bad"), 0o755) }, syscall.EEXIST, ""},
		{"ctl of unknown bot", func() error { return os.WriteFile(s.Path("nobot", "ctl"), []byte("start"), 0) }, syscall.ENOENT, ""},
		{"rmdir unknown bot", func() error { return os.Remove(s.Path("nobot")) }, syscall.ENOENT, ""},
		{"create a file at the top", func() error { return os.WriteFile(s.Path("file"), nil, 0o644) }, syscall.EROFS, ""},
		{"write status", func() error { return os.WriteFile(s.Path("bad", "status"), []byte("x"), 0) }, syscall.EACCES, ""},
	}
	for _, c := range cases {
		err := c.do()
		if !errnoIs(err, c.errno) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.errno)
			continue
		}
		if c.reason != "" {
			if msg := s.Read("bad", "err"); !strings.Contains(msg, c.reason) {
				t.Errorf("%s: err says %q, want %q in it", c.name, msg, c.reason)
			}
		}
		if after := s.StatusFields("bad"); after["state"] != before["state"] || after["snapshots"] != before["snapshots"] {
			t.Errorf("%s changed the bot: %v -> %v", c.name, before, after)
		}
	}

	// rmdir of a running bot.
	s.MustCtl("bad", "start")
	if err := os.Remove(s.Path("bad")); !errnoIs(err, syscall.EBUSY) {
		t.Fatalf("rmdir running: %v", err)
	}
	if msg := s.Read("bad", "err"); !strings.Contains(msg, "stop it first") {
		t.Fatalf("err after rmdir of a running bot: %q", msg)
	}
	if st := s.StatusFields("bad"); st["state"] != "running" {
		t.Fatalf("rmdir changed a running bot: %v", st)
	}
	// A success clears err.
	s.MustCtl("bad", "stop")
	if msg := s.Read("bad", "err"); msg != "" {
		t.Fatalf("err after a success: %q", msg)
	}
	entries, _ := os.ReadDir(s.Mnt)
	if len(entries) != 1 {
		t.Fatalf("refused mkdirs left entries: %v", entries)
	}
}
