package control

import (
	"strings"
	"testing"
	"time"

	"github.com/memohfs/memohfs/store"
)

func TestParseCtl(t *testing.T) {
	ok := map[string]string{
		"start":                 "start",
		"start\n":               "start",
		"  stop   3  \n\n":      "stop 3",
		"stop\nstart":           "stop|start",
		"snapshot\n":            "snapshot",
		"snapshot nightly-1":    "snapshot nightly-1",
		"restore v2\r\n":        "restore v2",
		"\n\nrestart\n\n":       "restart",
		"stop 0":                "stop 0",
		"stop 3600":             "stop 3600",
		"snapshot a\nrestore a": "snapshot a|restore a",
	}
	for in, want := range ok {
		cmds, err := ParseCtl(in)
		if err != nil {
			t.Errorf("ParseCtl(%q): %v", in, err)
			continue
		}
		var got []string
		for _, c := range cmds {
			got = append(got, c.String())
		}
		if strings.Join(got, "|") != want {
			t.Errorf("ParseCtl(%q) = %q, want %q", in, got, want)
		}
	}
	bad := map[string]string{
		"":                               "empty",
		"\n \n":                          "empty",
		"bogus":                          "unknown verb",
		"start now":                      "usage: start",
		"restore":                        "usage: restore NAME",
		"snapshot a b":                   "usage: snapshot [NAME]",
		"start\nbogus":                   "line 2: unknown verb",
		"start\x00":                      "NUL",
		"stop 1 2":                       "usage: stop",
		"Start":                          "unknown verb",
		"stop -1":                        "", // rejected when it runs: see TestParseSeconds
		strings.Repeat("start\n", 20000): "at most",
	}
	for in, want := range bad {
		_, err := ParseCtl(in)
		if want == "" {
			continue
		}
		if err == nil || KindOf(err) != KindInvalid || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseCtl(%.20q) = %v, want an invalid error with %q", in, err, want)
		}
	}
}

func TestParseSeconds(t *testing.T) {
	for in, want := range map[string]time.Duration{"0": 0, "10": 10 * time.Second, "3600": time.Hour} {
		got, err := parseSeconds(in)
		if err != nil || got != want {
			t.Errorf("parseSeconds(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"-1", "1.5", "x", "3601", "99999999999999999999", ""} {
		if _, err := parseSeconds(in); err == nil || KindOf(err) != KindInvalid {
			t.Errorf("parseSeconds(%q) = %v, want invalid", in, err)
		}
	}
}

func TestHelpListsEveryVerb(t *testing.T) {
	h := Help()
	for _, v := range verbs {
		if !strings.Contains(h, v.usage) {
			t.Errorf("help lacks %q", v.usage)
		}
	}
	if n := strings.Count(h, "\n"); n != len(verbs) {
		t.Errorf("help has %d lines for %d verbs", n, len(verbs))
	}
}

func TestStatusString(t *testing.T) {
	code := 137
	created := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	s := Status{Name: "b", ID: "id-1", State: store.StateStopped, Image: "img", Container: "memohfs-b",
		Snapshotter: "overlayfs", Created: created, Exit: &code, Snapshots: 2, Version: 3}
	want := "name b\nid id-1\nstate stopped\npid -\nip -\nimage img\ncontainer memohfs-b\nsnapshotter overlayfs\n" +
		"created 2026-11-26T10:00:00Z\nstarted -\nstopped -\nexit 137\nsnapshots 2\nversion 3\n"
	if got := s.String(); got != want {
		t.Fatalf("status:\n%s\nwant:\n%s", got, want)
	}
	// It reads back.
	started := created.Add(time.Minute)
	s.State, s.Pid, s.IP, s.Started = store.StateRunning, 42, "10.0.0.2", &started
	back, err := ParseStatus(s.String())
	if err != nil || back.String() != s.String() {
		t.Fatalf("read back %+v (%v) from\n%s", back, err, s)
	}
	if _, err := ParseStatus("name b\nnovalue\n"); KindOf(err) != KindInvalid {
		t.Fatalf("garbage status: %v", err)
	}
}

func TestEventString(t *testing.T) {
	e := Event{Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Type: "start",
		Detail: map[string]any{"pid": 42, "ip": "10.0.0.2", "why": "a b"}}
	if got, want := e.String(), "2026-01-02T03:04:05Z start ip=10.0.0.2 pid=42 why=\"a b\"\n"; got != want {
		t.Fatalf("%q, want %q", got, want)
	}
	if got := (Event{Time: e.Time, Type: "delete"}).String(); got != "2026-01-02T03:04:05Z delete -\n" {
		t.Fatalf("%q", got)
	}
}
