package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/memohfs/memohfs/internal/embedded"
	"github.com/memohfs/memohfs/internal/mcptest"
	"github.com/memohfs/memohfs/internal/testenv"
)

// execRun is one `memohfs exec` run.
type execRun struct {
	out, err string
	code     int
}

func runExec(t *testing.T, mnt string, stdin io.Reader, args ...string) execRun {
	t.Helper()
	cmd := exec.Command(binary(t), append([]string{"exec", "--mount", mnt}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &out, &errb
	err := cmd.Run()
	r := execRun{out: out.String(), err: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("memohfs exec %v: %v", args, err)
	}
	return r
}

// psIn lists the bot's processes (busybox ps), through memohfs exec.
func psIn(t *testing.T, mnt, bot string) string {
	t.Helper()
	r := runExec(t, mnt, nil, bot, "--", "ps", "-o", "pid,args")
	if r.code != 0 {
		t.Fatalf("ps in %s: %d %s", bot, r.code, r.err)
	}
	return r.out
}

// conns lists the bot's cmd/ connections.
func conns(t *testing.T, mnt, bot string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(mnt, bot, "cmd"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if e.Name() != "clone" {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestExec: `memohfs exec` against a real `memohfs up`: exit statuses,
// stdin to end of file, 100 MiB of stdout intact, stderr apart, signals,
// a command that is not there, a stopped bot, the tree ended by SIGTERM,
// and an MCP round trip with the official SDK.
func TestExec(t *testing.T) {
	state, mnt := upInstance(t)
	d := startUp(t, state, mnt)
	sh(t, `M=`+mnt+`; mkdir $M/b && echo start > $M/b/ctl`)

	t.Run("exit status", func(t *testing.T) {
		for cmd, want := range map[string]int{"true": 0, "exit 7": 7, "kill -TERM $$": 128 + 15, "kill -KILL $$": 128 + 9} {
			if r := runExec(t, mnt, nil, "b", "--", "sh", "-c", cmd); r.code != want {
				t.Errorf("%s: exit %d, want %d (stderr %q)", cmd, r.code, want, r.err)
			}
		}
	})
	t.Run("stdin to end of file, stderr apart", func(t *testing.T) {
		r := runExec(t, mnt, strings.NewReader("one\ntwo\n"), "b", "--", "sh", "-c", "cat; echo done; echo oops >&2")
		if r.code != 0 || r.out != "one\ntwo\ndone\n" || r.err != "oops\n" {
			t.Fatalf("got %+v", r)
		}
	})
	t.Run("dir and env", func(t *testing.T) {
		r := runExec(t, mnt, nil, "--dir", "/tmp", "--env", "A=it's here", "b", "--", "sh", "-c", `pwd; echo "$A"`)
		if r.code != 0 || r.out != "/tmp\nit's here\n" {
			t.Fatalf("got %+v", r)
		}
	})
	t.Run("100 MiB through stdout", func(t *testing.T) {
		cmd := exec.Command(binary(t), "exec", "--mount", mnt, "b", "--", "sh", "-c",
			"head -c 104857600 /dev/urandom > /tmp/big && sha256sum /tmp/big >&2 && cat /tmp/big && rm /tmp/big")
		var errb bytes.Buffer
		cmd.Stderr = &errb
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		n, _ := io.Copy(h, out)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("%v: %s", err, errb.String())
		}
		sum := strings.Fields(errb.String())
		if n != 100<<20 || len(sum) == 0 || sum[0] != hex.EncodeToString(h.Sum(nil)) {
			t.Fatalf("got %d bytes, sha256 %x; the bot says %q", n, h.Sum(nil), errb.String())
		}
	})
	t.Run("no such command", func(t *testing.T) {
		r := runExec(t, mnt, nil, "b", "--", "nosuch-command")
		if r.code != 127 || !strings.Contains(r.err, "nosuch-command") || !strings.Contains(r.err, "not found") {
			t.Fatalf("got %+v", r)
		}
		testenv.Eventually(t, time.Minute, "no connection left", func() bool { return len(conns(t, mnt, "b")) == 0 })
		rd := runExec(t, mnt, nil, "--dir", "/nowhere", "b", "--", "true")
		if rd.code != 127 || !strings.Contains(rd.err, "/nowhere") {
			t.Fatalf("a dir that is not there: %+v", rd)
		}
	})
	t.Run("the tree ends with SIGTERM to memohfs exec", func(t *testing.T) {
		cmd := exec.Command(binary(t), "exec", "--mount", mnt, "b", "--", "sh", "-c",
			"sleep 1001 & (sleep 1002 &); echo up; sleep 1003")
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line := make([]byte, 3)
		if _, err := io.ReadFull(out, line); err != nil || string(line) != "up\n" {
			t.Fatalf("read %q: %v", line, err)
		}
		// The window: every sleep runs, one of them double-forked away.
		testenv.Eventually(t, time.Minute, "three sleeps", func() bool {
			ps := psIn(t, mnt, "b")
			return strings.Contains(ps, "sleep 1001") && strings.Contains(ps, "sleep 1002") && strings.Contains(ps, "sleep 1003")
		})
		cmd.Process.Signal(syscall.SIGTERM)
		// One that does not end (what the command left running holds
		// its output open) fails here.
		err = testenv.WaitBounded(cmd, 2*time.Minute)
		if errors.Is(err, testenv.ErrLivesOn) {
			t.Fatalf("memohfs exec after its signal: %v: processes of the command still hold its output", err)
		}
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 128+15 {
			t.Errorf("memohfs exec after SIGTERM: %v, want exit 143", err)
		}
		if ps := psIn(t, mnt, "b"); strings.Contains(ps, "sleep 100") {
			t.Fatalf("left in the bot:\n%s", ps)
		}
	})
	t.Run("MCP round trip", func(t *testing.T) {
		srv, err := mcptest.BuildServer(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		sh(t, "cp "+srv+" "+mnt+"/b/data/mcp-server && chmod 755 "+mnt+"/b/data/mcp-server")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		res, err := mcptest.RoundTrip(ctx, exec.Command(binary(t), "exec", "--mount", mnt, "--env", "MEMOHFS_TEST_ENV=in-bot",
			"b", "--", "/data/mcp-server"))
		if err != nil {
			t.Fatal(err)
		}
		if res.ServerName != "memohfs-test" || strings.Join(res.Tools, ",") != "add,echo,whoami" ||
			res.Echo != mcptest.EchoText || res.Sum != "42" || res.WhoAmI != "/data\nin-bot" {
			t.Fatalf("round trip: %+v", res)
		}
	})
	t.Run("stopped bot", func(t *testing.T) {
		sh(t, `echo stop > `+mnt+`/b/ctl`)
		r := runExec(t, mnt, nil, "b", "--", "true")
		if r.code != 125 || !strings.Contains(r.err, "device or resource busy") || !strings.Contains(r.err, "stopped") {
			t.Fatalf("got %+v", r)
		}
		if e := readFile(filepath.Join(mnt, "b", "err")); !strings.Contains(e, "exec needs it running") {
			t.Fatalf("err: %q", e)
		}
	})
	d.stop()
}

// readEvents reads a bot's events so far.
func readEvents(t *testing.T, mnt, bot string) string {
	return testenv.ReadNow(t, filepath.Join(mnt, bot, "events"))
}

// TestExecKill9: a daemon killed with connections open; the next up
// ends what they left running and records how they ended.
func TestExecKill9(t *testing.T) {
	state, mnt := upInstance(t)
	d := startUp(t, state, mnt)
	sh(t, `M=`+mnt+`; mkdir $M/k && echo start > $M/k/ctl`)
	var clients []*exec.Cmd
	for i := 0; i < 3; i++ {
		cmd := exec.Command(binary(t), "exec", "--mount", mnt, "k", "--", "sh", "-c", "echo up; exec sleep 2001")
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line := make([]byte, 3)
		if _, err := io.ReadFull(out, line); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, cmd)
	}
	if n := strings.Count(psIn(t, mnt, "k"), "sleep 2001"); n != 3 {
		t.Fatalf("%d sleeps run, want 3", n)
	}
	d.cmd.Process.Kill()
	<-d.exited
	for _, c := range clients {
		c.Wait() // their mount is gone: they end
	}
	d = startUp(t, state, mnt)
	reaped := func() bool { return strings.Count(readEvents(t, mnt, "k"), "reaped=true") == 3 }
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("events:\n%s\nlog:\n%s", readEvents(t, mnt, "k"), embedded.Tail(d.log, 60))
		}
	})
	testenv.Eventually(t, 2*time.Minute, "three exits recorded as reaped", reaped)
	if ps := psIn(t, mnt, "k"); strings.Contains(ps, "sleep 2001") {
		t.Fatalf("left in the bot after the reap:\n%s\n%s", ps, embedded.Tail(d.log, 20))
	}
	ev := readEvents(t, mnt, "k")
	if strings.Count(ev, " exec ") < 3 {
		t.Fatalf("exec events missing:\n%s", ev)
	}
	sh(t, `echo stop > `+mnt+`/k/ctl`)
	d.stop()
}
