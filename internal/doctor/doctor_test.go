package doctor

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDoctorStatus: a check's word in the table, and whether it fails
// doctor: only a needed check that is not OK does.
func TestDoctorStatus(t *testing.T) {
	for _, c := range []struct {
		ch     Check
		status string
		failed bool
	}{
		{Check{OK: true, Needed: true}, "ok", false},
		{Check{OK: true}, "ok", false},
		{Check{Needed: true}, "FAIL", true},
		{Check{}, "warn", false},
	} {
		if s, f := c.ch.Status(), c.ch.Failed(); s != c.status || f != c.failed {
			t.Errorf("%+v: %q, failed %v; want %q, %v", c.ch, s, f, c.status, c.failed)
		}
	}
}

// TestDoctorRun: Run gives the table's rows in their order; without
// RequireServe, an unreachable containerd and no Postgres only warn, and
// with it they fail; a CNI dir without the plugins fails, naming the dirs
// as given.
func TestDoctorRun(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	sock := filepath.Join(t.TempDir(), "containerd.sock")
	names := func(cs []Check) string {
		var n []string
		for _, c := range cs {
			n = append(n, c.Name)
		}
		return strings.Join(n, "|")
	}
	want := "/dev/fuse|data/ binds|fusermount3|runc|CNI plugins|cgroups|inotify watches|inotify instances|overlay|9p (v9fs)|" +
		"containerd (for up)|postgres (for up)|containerd " + sock + "|postgres"
	row := func(cs []Check, name string) Check {
		t.Helper()
		for _, c := range cs {
			if c.Name == name {
				return c
			}
		}
		t.Fatalf("no %q row: %s", name, names(cs))
		return Check{}
	}
	cs := Run(context.Background(), Options{CNIBinDirs: []string{"/nonexistent", "/nonexistent2"}, ContainerdAddress: sock, Bots: 1})
	if got := names(cs); got != want {
		t.Fatalf("rows %s\nwant %s", got, want)
	}
	// 9p: not needed (memohfs serves 9P without it); either way it says
	// how to mount, with the socket given, and whether this kernel can.
	fsys, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		t.Fatal(err)
	}
	has9p := strings.Contains(string(fsys), "\t9p\n")
	c9 := row(Run(context.Background(), Options{ContainerdAddress: sock, Bots: 1, NinePSocket: "/x/9p.sock"}), "9p (v9fs)")
	if c9.Needed || c9.OK != has9p || !strings.Contains(c9.Detail, "mount -t 9p -o trans=unix,version=9p2000.L") || !strings.Contains(c9.Detail, "/x/9p.sock /mnt/memoh") {
		t.Errorf("9p row (kernel has v9fs: %v): %+v", has9p, c9)
	}
	if c := row(cs, "CNI plugins"); c.Status() != "FAIL" || !strings.Contains(c.Detail, "in /nonexistent:/nonexistent2") {
		t.Errorf("CNI plugins with no plugin dir: %+v", c)
	}
	for _, name := range []string{"containerd " + sock, "postgres"} {
		if c := row(cs, name); c.Status() != "warn" {
			t.Errorf("%s without RequireServe: %+v, want warn", name, c)
		}
	}
	cs = Run(context.Background(), Options{ContainerdAddress: sock, RequireServe: true, Bots: 1})
	for _, name := range []string{"containerd " + sock, "postgres"} {
		if c := row(cs, name); c.Status() != "FAIL" {
			t.Errorf("%s with RequireServe: %+v, want FAIL", name, c)
		}
	}
}

// TestDoctorInotifyNeeds: no fewer than one bot is counted; too many
// bots warn (never fail) with the sysctl, the watches capped at MaxInt32.
func TestDoctorInotifyNeeds(t *testing.T) {
	cs := inotify(0)
	if !strings.Contains(cs[0].Detail, "; 1 bots need ") {
		t.Errorf("0 bots are not counted as 1: %q", cs[0].Detail)
	}
	cs = inotify(1 << 30)
	for i, want := range []string{"max_user_watches=2147483647 ", "max_user_instances=1073741888 "} {
		if c := cs[i]; c.Status() != "warn" || !strings.Contains(c.Fix, want) {
			t.Errorf("%d bots: %+v, want a warning and %q", 1<<30, c, want)
		}
	}
}
