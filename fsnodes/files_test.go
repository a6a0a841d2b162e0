package fsnodes_test

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/memohfs/memohfs/fsnodes"
)

// TestEventsFollow: a reader of events gets the history, then blocks at
// the end until the next event arrives.
func TestEventsFollow(t *testing.T) {
	s := newStack(t, fsnodes.Options{})
	must(t, os.Mkdir(s.Path("ev"), 0o755))
	f, err := os.Open(s.Path("ev", "events"))
	if err != nil {
		t.Fatal(err)
	}
	// No defer f.Close(): closing a file another goroutine reads waits for
	// that read. The reader ends when the bot is deleted, below.
	lines := make(chan string, 16)
	go func() {
		r := bufio.NewReader(f)
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				close(lines)
				return
			}
			lines <- l
		}
	}()
	next := func() string {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("events ended")
			}
			return l
		case <-time.After(20 * time.Second):
			t.Fatal("no event line within 20s")
		}
		return ""
	}
	if l := next(); !strings.Contains(l, " create ") {
		t.Fatalf("history starts with %q", l)
	}
	select {
	case l := <-lines:
		t.Fatalf("a line before any new event: %q", l)
	case <-time.After(300 * time.Millisecond):
	}
	s.MustCtl("ev", "start")
	l := next()
	fields := strings.Fields(l)
	if len(fields) < 3 || fields[1] != "start" || !strings.Contains(l, "pid=") {
		t.Fatalf("start event line %q", l)
	}
	if _, err := time.Parse(time.RFC3339Nano, fields[0]); err != nil {
		t.Fatalf("event time %q: %v", fields[0], err)
	}
	s.MustCtl("ev", "stop 1")
	if l := next(); !strings.Contains(l, " stop ") {
		t.Fatalf("stop event line %q", l)
	}
	// Deleting the bot ends its readers with end-of-file (after the
	// delete event itself, which a reader may or may not catch).
	must(t, os.Remove(s.Path("ev")))
	deadline := time.After(10 * time.Second)
	for ended := false; !ended; {
		select {
		case l, ok := <-lines:
			if !ok {
				ended = true
			} else if !strings.Contains(l, " delete ") {
				t.Fatalf("a line after delete: %q", l)
			}
		case <-deadline:
			t.Fatal("the events reader did not end when the bot was deleted")
		}
	}
	f.Close()
}

// TestSelfExit: a bot whose process ends by itself shows stopped with its
// exit code within a second, and the exit is an event.
func TestSelfExit(t *testing.T) {
	s := newStack(t, fsnodes.Options{})
	must(t, os.Mkdir(s.Path("brief"), 0o755))
	s.MustCtl("brief", "start")
	pid := s.StatusFields("brief")["pid"]
	n, _ := strconv.Atoi(pid)
	// Killed from outside, as the OOM killer would.
	must(t, syscall.Kill(n, syscall.SIGKILL))
	start := time.Now()
	eventually(t, time.Second, "status shows the exit", func() bool {
		st := s.StatusFields("brief")
		return st["state"] == "stopped" && st["exit"] == "137" && st["pid"] == "-"
	})
	t.Logf("exit visible in status after %s (pid was %s)", time.Since(start), pid)
	eventually(t, 10*time.Second, "exit event", func() bool {
		out, _ := s.Sh(`dd if=$M/brief/events iflag=nonblock status=none`)
		return strings.Contains(out, " exit ") && strings.Contains(out, "exit=137")
	})
	// It starts again.
	s.MustCtl("brief", "start")
	if st := s.StatusFields("brief"); st["state"] != "running" || st["pid"] == pid {
		t.Fatalf("restart after exit: %v", st)
	}
}

// TestLog: log has the bot's output, with an honest size that grows.
func TestLog(t *testing.T) {
	s := newStack(t, fsnodes.Options{})
	must(t, os.Mkdir(s.Path("talky"), 0o755))
	s.MustCtl("talky", "start")
	eventually(t, 10*time.Second, "the bot's first line in log", func() bool {
		b, _ := os.ReadFile(s.Path("talky", "log"))
		return strings.Contains(string(b), "memohfs bot talky up")
	})
	fi, err := os.Stat(s.Path("talky", "log"))
	if err != nil || fi.Size() == 0 {
		t.Fatalf("log size: %v %v", fi, err)
	}
	s.MustCtl("talky", "stop")
	eventually(t, 5*time.Second, "log grows", func() bool {
		fi2, _ := os.Stat(s.Path("talky", "log"))
		return fi2 != nil && fi2.Size() > fi.Size()
	})
	if err := os.WriteFile(s.Path("talky", "log"), []byte("x"), 0); !errnoIs(err, syscall.EACCES) {
		t.Fatalf("log is writable: %v", err)
	}
}

// TestSkills: skills/ and data/.skills are the same files.
func TestSkills(t *testing.T) {
	s := newStack(t, fsnodes.Options{})
	must(t, os.Mkdir(s.Path("sk"), 0o755))
	must(t, os.Mkdir(s.Path("sk", "skills", "greet"), 0o755))
	must(t, os.WriteFile(s.Path("sk", "skills", "greet", "SKILL.md"), []byte("---\nname: greet\n---\nSay hi.\n"), 0o644))
	if got := s.Read("sk", "data", ".skills", "greet", "SKILL.md"); !strings.Contains(got, "Say hi.") {
		t.Fatalf("data/.skills view: %q", got)
	}
	must(t, os.MkdirAll(filepath.Join(s.Root, "bots", "sk", ".skills", "bye"), 0o755))
	must(t, os.WriteFile(filepath.Join(s.Root, "bots", "sk", ".skills", "bye", "SKILL.md"), []byte("Bye.\n"), 0o644))
	if got := s.Read("sk", "skills", "bye", "SKILL.md"); got != "Bye.\n" {
		t.Fatalf("skills view of a host-side skill: %q", got)
	}
	entries, _ := os.ReadDir(s.Path("sk", "skills"))
	if len(entries) != 2 {
		t.Fatalf("ls skills: %v", entries)
	}
	must(t, os.RemoveAll(s.Path("sk", "skills", "greet")))
	if _, err := os.Stat(s.Path("sk", "data", ".skills", "greet")); !os.IsNotExist(err) {
		_, herr := os.Stat(filepath.Join(s.Root, "bots", "sk", ".skills", "greet"))
		time.Sleep(1100 * time.Millisecond)
		_, again := os.Stat(s.Path("sk", "data", ".skills", "greet"))
		t.Fatalf("removed skill still in data: %v (host: %v; a second later: %v)", err, herr, again)
	}
	// .skills gone (the bot deleted it): skills/ is empty, and works again.
	must(t, os.RemoveAll(filepath.Join(s.Root, "bots", "sk", ".skills")))
	if entries, err := os.ReadDir(s.Path("sk", "skills")); err != nil || len(entries) != 0 {
		t.Fatalf("skills without .skills: %v %v", entries, err)
	}
	must(t, os.Mkdir(s.Path("sk", "skills", "again"), 0o755))
}

// TestCwdSurvivesChanges: a shell working inside data/ keeps its working
// directory while files change under it, from the mount and from the
// bot's side (invalidating a directory's entry would cut it off).
func TestCwdSurvivesChanges(t *testing.T) {
	s := newStack(t, fsnodes.Options{})
	must(t, os.Mkdir(s.Path("cw"), 0o755))
	host := filepath.Join(s.Root, "bots", "cw", "d")
	out, err := s.Sh(`mkdir $M/cw/data/d && cd $M/cw/data/d && for i in 1 2 3 4 5; do echo $i > f$i; done &&
		touch ` + host + `/from-host && mkdir ` + host + `/sub && sleep 0.3 && /bin/pwd && ls | wc -l`)
	if err != nil || !strings.HasSuffix(strings.TrimSpace(strings.Split(out, "\n")[0]), "/cw/data/d") || !strings.Contains(out, "\n7\n") {
		t.Fatalf("cwd in data/: %v\n%s", err, out)
	}
}
