package runtime

import (
	"path/filepath"
	"strings"
	"testing"
)

// FuzzNames: a name that passes validation can never name anything but
// itself: no separator, no dot-dot, no NUL, bounded length; joined under a
// root it stays a direct child; container ids and snapshot keys made from
// it map back to it. Refusals come with a reason and the invalid-argument
// class (EINVAL). Nothing panics.
func FuzzNames(f *testing.F) {
	for _, s := range []string{
		"demo", "a", "bot-1_x", "", ".", "..", "../etc", "a/b", "/abs", "A", "-x", "_x",
		strings.Repeat("a", 63), strings.Repeat("a", 64), "a\x00b", "é", "v1", "pre-restore-3",
		"a..b", ".hidden", "x.", strings.Repeat("s", 128), strings.Repeat("s", 129), "s p",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		root := "/data/bots"
		if ValidBotName(name) {
			if err := checkBot(name); err != nil {
				t.Fatalf("valid bot name %q refused: %v", name, err)
			}
			sane(t, "bot", name, 63)
			if p := filepath.Join(root, name); filepath.Dir(p) != root || filepath.Base(p) != name {
				t.Fatalf("bot %q joined under %s is %s", name, root, p)
			}
			if BotOf(ContainerID(name)) != name {
				t.Fatalf("bot %q: container id %q maps back to %q", name, ContainerID(name), BotOf(ContainerID(name)))
			}
			if snapNameOf(name, snapKey(name, "s1")) != "s1" {
				t.Fatalf("bot %q: snapshot key does not map back", name)
			}
		} else if err := checkBot(name); err == nil || !strings.Contains(err.Error(), "invalid argument") {
			t.Fatalf("invalid bot name %q: %v", name, err)
		}
		if ValidSnapshotName(name) {
			sane(t, "snapshot", name, 128)
			if p := filepath.Join(root, name); filepath.Dir(p) != root || filepath.Base(p) != name {
				t.Fatalf("snapshot %q joined under %s is %s", name, root, p)
			}
			if got := snapNameOf("bot", snapKey("bot", name)); got != name {
				t.Fatalf("snapshot %q: key %q maps back to %q", name, snapKey("bot", name), got)
			}
		} else if err := checkSnapshot(name); err == nil || !strings.Contains(err.Error(), "invalid argument") {
			t.Fatalf("invalid snapshot name %q: %v", name, err)
		}
		// A foreign container id never maps to a bot it does not name.
		if b := BotOf(name); b != "" && ContainerID(b) != name {
			t.Fatalf("container id %q claims bot %q", name, b)
		}
	})
}

func sane(t *testing.T, what, name string, max int) {
	t.Helper()
	if name == "" || len(name) > max || strings.ContainsAny(name, "/\x00 \t\n") ||
		name == "." || name == ".." || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "-") {
		t.Fatalf("%s name %q passed validation", what, name)
	}
}
