package hardness

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Attacks of TestEscapes (escapes_harness_test.go): setuid binaries the bot makes, run through the mount.

func escSetuid(t *testing.T, e *escEnv) {
	// The bot writes a binary (here the host's id, which does not drop
	// privileges as busybox does) and makes it setuid root.
	host := filepath.Join(e.s.HostData(e.a), "suid-id")
	escCopy(t, "/usr/bin/id", host, 0o755)
	e.sh(t, e.a, "chmod 4755 /data/suid-id")
	var st unix.Stat_t
	must(t, unix.Stat(host, &st))
	if st.Mode&0o7777 != 0o4755 || st.Uid != 0 {
		t.Fatalf("the bot's setuid binary on the host: %o uid %d", st.Mode&0o7777, st.Uid)
	}
	// Control: the same binary elsewhere on this disk does run as root.
	ctlDir := e.s.Env.TempDir(t)
	must(t, os.Chmod(ctlDir, 0o755))
	escCopy(t, "/usr/bin/id", filepath.Join(ctlDir, "suid-id"), 0o755)
	must(t, syscall.Chmod(filepath.Join(ctlDir, "suid-id"), 0o4755)) // os.Chmod wants os.ModeSetuid
	if out, err := e.run(t, escAlice, 10*time.Second, filepath.Join(ctlDir, "suid-id"), "-u"); strings.TrimSpace(out) != "0" {
		st, _ := os.ReadFile("/proc/self/status")
		ls, _ := exec.Command("ls", "-ln", filepath.Join(ctlDir, "suid-id")).CombinedOutput()
		nnp := regexp.MustCompile(`NoNewPrivs:\s*\d`).FindString(string(st))
		t.Fatalf("control: a setuid-root id off the mount runs as %q (%v; %s; %s): the check below would prove nothing", out, err, nnp, ls)
	}
	out, err := e.run(t, escAlice, 10*time.Second, e.data(e.a, "suid-id"), "-u")
	if err != nil || strings.TrimSpace(out) != itoa(escAlice) {
		t.Errorf("the setuid binary run through the mount: euid %q (%v), want %d", out, err, escAlice)
	}
}

func escSetuidHostPath(t *testing.T, e *escEnv) {
	host := filepath.Join(e.s.HostData(e.a), "suid-id")
	if _, err := os.Lstat(host); err != nil {
		escCopy(t, "/usr/bin/id", host, 0o755)
		e.sh(t, e.a, "chmod 4755 /data/suid-id")
	}
	e.sh(t, e.a, "ln -s "+host+" /data/suid-host")
	out, err := e.run(t, escAlice, 10*time.Second, e.data(e.a, "suid-host"), "-u")
	if strings.TrimSpace(out) != itoa(escAlice) && !strings.Contains(fmt.Sprint(out, err), e.linkMsg("ermission denied")) {
		t.Errorf("the bot's setuid binary run through a link to its host path: euid %q (%v), want %d or EACCES", out, err, escAlice)
	}
}

func escCopy(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	must(t, err)
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	must(t, err)
	_, err = io.Copy(out, in)
	must(t, err)
	must(t, out.Close())
}
