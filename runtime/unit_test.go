package runtime

import (
	"os"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// TestConflistGolden pins the CNI configuration the project writes.
func TestConflistGolden(t *testing.T) {
	n := NetworkConfig{}
	if err := n.setDefaults("/var/lib/memohfs"); err != nil {
		t.Fatal(err)
	}
	got, err := n.Conflist()
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("../testdata/conflist.golden")
	if err != nil {
		t.Fatal(err)
	}
	if string(got)+"\n" != string(want) {
		t.Fatalf("conflist:\n%s\nwant:\n%s", got, want)
	}
}

func TestNetworkConfigRejects(t *testing.T) {
	for _, n := range []NetworkConfig{
		{Bridge: "a-bridge-name-too-long"},
		{Subnet: "10.0.0.0"},
		{Subnet: "fd00::/64"},
		{Subnet: "10.0.0.0/31"},
		{Subnet: "10.9.0.0/24", Gateway: "10.8.0.1"},
	} {
		if err := n.setDefaults("/s"); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%+v: want invalid argument, got %v", n, err)
		}
	}
	n := NetworkConfig{Subnet: "10.9.0.77/24"}
	if err := n.setDefaults("/s"); err != nil || n.Subnet != "10.9.0.0/24" || n.Gateway != "10.9.0.1" {
		t.Fatalf("normalised: %+v %v", n, err)
	}
}

func TestNames(t *testing.T) {
	for name, ok := range map[string]bool{
		"a": true, "bot-1": true, "b_2": true, "0": true, strings.Repeat("a", 63): true,
		"": false, "-a": false, "_a": false, "A": false, "a/b": false, "a.b": false, "..": false,
		strings.Repeat("a", 64): false, "a b": false, "é": false,
	} {
		if ValidBotName(name) != ok {
			t.Errorf("ValidBotName(%q) = %v", name, !ok)
		}
	}
	for name, ok := range map[string]bool{
		"v1": true, "pre-restore-3": true, "Daily.2026_11": true,
		"": false, ".hidden": false, "../x": false, "a/b": false, strings.Repeat("s", 129): false,
	} {
		if ValidSnapshotName(name) != ok {
			t.Errorf("ValidSnapshotName(%q) = %v", name, !ok)
		}
	}
	if BotOf(ContainerID("abc")) != "abc" || BotOf("other") != "" || BotOf("memohfs-Bad") != "" {
		t.Fatal("BotOf does not invert ContainerID")
	}
	if snapNameOf("b", snapKey("b", "s1")) != "s1" || snapNameOf("b", activeKey("b", "1")) != "" ||
		snapNameOf("b", snapKey("bb", "s1")) != "" {
		t.Fatal("snapNameOf does not invert snapKey")
	}
	if CNIID("ns1", "memohfs-x") == CNIID("ns2", "memohfs-x") {
		t.Fatal("CNI ids must differ across namespaces")
	}
}
