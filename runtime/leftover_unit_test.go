package runtime

import (
	"strings"
	"testing"
)

// TestShimArgsKind: the orphan sweep kills long-running shims of the
// container and never containerd's helper runs of the shim binary (an
// earlier matcher took a `delete` helper for a shim and killed
// containerd's clean-up), nor another container's, namespace's or
// containerd's shim.
func TestShimArgsKind(t *testing.T) {
	const bin, ns, id, addr = "/opt/bin/containerd-shim-runc-v2", "memohfs", "memohfs-c1", "/run/memohfs/x/ctrd/c.sock"
	for _, c := range []struct{ cmd, want string }{
		{bin + " -namespace memohfs -id memohfs-c1 -address /run/memohfs/x/ctrd/c.sock", "shim"},
		{bin + " -namespace memohfs -id memohfs-c1 -address /run/memohfs/x/ctrd/c.sock -debug", "shim"},
		{bin + " -namespace=memohfs -id=memohfs-c1 -address=unix:///run/memohfs/x/ctrd/c.sock", "shim"},
		{bin + " -namespace memohfs -address /run/memohfs/x/ctrd/c.sock -publish-binary /opt/bin/containerd -id memohfs-c1 -bundle /s/memohfs-c1 delete", "helper"},
		{bin + " -namespace memohfs -address /run/memohfs/x/ctrd/c.sock -publish-binary /opt/bin/containerd -id memohfs-c1 -bundle /s/memohfs-c1 start", "helper"},
		{bin + " -namespace memohfs -id memohfs-c2 -address /run/memohfs/x/ctrd/c.sock", ""},
		{bin + " -namespace other -id memohfs-c1 -address /run/memohfs/x/ctrd/c.sock", ""},
		{bin + " -namespace memohfs -id memohfs-c1 -address /run/memohfs/y/ctrd/c.sock", ""},
		{"/bin/sh -c containerd-shim-runc-v2 -namespace memohfs -id memohfs-c1 -address /run/memohfs/x/ctrd/c.sock", ""},
		{"", ""},
	} {
		if got := shimArgsKind(strings.Fields(c.cmd), ns, id, addr); got != c.want {
			t.Errorf("%q: %q, want %q", c.cmd, got, c.want)
		}
	}
}
