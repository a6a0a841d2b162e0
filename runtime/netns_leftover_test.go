package runtime_test

import (
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestStopUnmountedNetNS: a kill between the unmount of a bot's pinned
// netns and the removal of its file leaves a plain file where the
// container's label points. Stop must still release the address and
// remove the file (CNI's DEL, handed that file, failed with "unknown FS
// magic", and reconcile with it: TestCrash saw it).
func TestStopUnmountedNetNS(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.bot("unpinned", loop)
	f.start("unpinned")
	info, err := f.rt.Container(f.ctx, "unpinned")
	if err != nil || info.NetNS == "" {
		t.Fatalf("container after start: %+v %v", info, err)
	}
	// The task goes (as a stop does before it tears the network down),
	// then the pin is unmounted and the daemon dies.
	ctx := namespacesCtx(f)
	ctr, err := f.rt.Client().LoadContainer(ctx, info.ID)
	if err != nil {
		t.Fatal(err)
	}
	task, err := ctr.Task(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := task.Delete(ctx, withKill()); err != nil {
		t.Fatal(err)
	}
	if err := unix.Unmount(info.NetNS, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(info.NetNS, &st); err != nil || st.Type == unix.NSFS_MAGIC {
		t.Fatalf("the pin is not a plain file: %v %x", err, st.Type)
	}
	if len(leases(f.cfg)) != 1 {
		t.Fatalf("leases before the stop: %v", leases(f.cfg))
	}
	if _, err := f.rt.Stop(f.ctx, "unpinned", time.Second); err != nil {
		t.Fatal(err)
	}
	if l := leases(f.cfg); len(l) != 0 {
		t.Fatalf("leases after the stop: %v", l)
	}
	if _, err := os.Lstat(info.NetNS); !os.IsNotExist(err) {
		t.Fatalf("the pin file is left: %v", err)
	}
	if c, err := f.rt.Container(f.ctx, "unpinned"); err != nil || c.NetNS != "" || c.IP != "" {
		t.Fatalf("network labels after the stop: %+v %v", c, err)
	}
	f.start("unpinned")
	if _, err := f.rt.Stop(f.ctx, "unpinned", 5*time.Second); err != nil {
		t.Fatal(err)
	}
}
