package runtime_test

import (
	"slices"
	"strings"
	"testing"
)

// TestDataMountNodev: the bot's /data is bound rbind,rw,nosuid,nodev; a
// device node the bot makes there cannot be opened, while the same node
// made on its rootfs (no nodev) can: the refusal is the mount's, not the
// device cgroup's or a missing CAP_MKNOD.
func TestDataMountNodev(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	info, _ := f.bot("nodev", loop)
	ctx := namespacesCtx(f)
	ctr, err := f.rt.Client().LoadContainer(ctx, info.ID)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := ctr.Spec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, m := range spec.Mounts {
		if m.Destination != "/data" {
			continue
		}
		found = true
		for _, o := range []string{"rbind", "rw", "nosuid", "nodev"} {
			if !slices.Contains(m.Options, o) {
				t.Errorf("/data mount options %v lack %s", m.Options, o)
			}
		}
	}
	if !found {
		t.Fatalf("no /data mount in the spec: %+v", spec.Mounts)
	}

	f.start("nodev")
	// What the kernel applied, as the bot sees it.
	out, code := f.exec("nodev", "awk", `$5 == "/data" { print $6 }`, "/proc/self/mountinfo")
	if code != 0 {
		t.Fatalf("mountinfo: %d %s", code, out)
	}
	opts := strings.Split(strings.TrimSpace(out), ",")
	if !slices.Contains(opts, "nodev") || !slices.Contains(opts, "nosuid") || !slices.Contains(opts, "rw") {
		t.Fatalf("/data is mounted %q in the bot, want rw,nosuid,nodev", out)
	}

	// Control: the same node on the rootfs is usable.
	if out, code := f.exec("nodev", "sh", "-c", "mknod /root/null c 1 3 && echo x > /root/null"); code != 0 {
		t.Fatalf("a 1:3 node on the rootfs is not usable, so /data proves nothing: %d %s", code, out)
	}
	if out, code := f.exec("nodev", "mknod", "/data/null", "c", "1", "3"); code != 0 {
		t.Fatalf("mknod in /data: %d %s", code, out)
	}
	out, code = f.exec("nodev", "sh", "-c", "echo x > /data/null")
	if code == 0 {
		t.Fatal("a device node made in /data could be opened in the bot")
	}
	if !strings.Contains(out, "Permission denied") && !strings.Contains(out, "not permitted") {
		t.Fatalf("opening /data/null failed, but not with EACCES/EPERM: %d %s", code, out)
	}
	t.Logf("open of /data/null in the bot: %s", strings.TrimSpace(out))
}
