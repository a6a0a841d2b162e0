package runtime

import (
	"path/filepath"
	"strings"
	"testing"
)

// FuzzNames: the name checks accept exactly the names the documented
// rules allow (docs/semantics.md, control's messages): a bot name is 1 to
// 63 of a-z 0-9 _ -, starting with a letter or a digit; a snapshot name is
// 1 to 128 of A-Z a-z 0-9 . _ -, starting with a letter or a digit. The
// oracle (botNameOK, snapNameOK) is written byte by byte, independently of
// the regular expressions under test. A name that passes can never name
// anything but itself: no separator, no dot-dot, no NUL, bounded length;
// joined under a root it stays a direct child; container ids and snapshot
// keys made from it map back to it. Refusals come with a reason and the
// invalid-argument class (EINVAL). Nothing panics.
func FuzzNames(f *testing.F) {
	for _, s := range []string{
		"demo", "a", "bot-1_x", "", ".", "..", "../etc", "a/b", "/abs", "A", "-x", "_x",
		strings.Repeat("a", 63), strings.Repeat("a", 64), "a\x00b", "é", "v1", "pre-restore-3",
		"a..b", ".hidden", "x.", strings.Repeat("s", 128), strings.Repeat("s", 129), "s p",
		"0", "9-", "a_", "Zed", "zed", "a\n", "a\nb", "\na", "a.b", "a:b", "a+b", "a~", "a\x7f", "\xffa",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		root := "/data/bots"
		if got, want := ValidBotName(name), botNameOK(name); got != want {
			t.Fatalf("bot name %q: ValidBotName says %v, the rules say %v", name, got, want)
		}
		if got, want := ValidSnapshotName(name), snapNameOK(name); got != want {
			t.Fatalf("snapshot name %q: ValidSnapshotName says %v, the rules say %v", name, got, want)
		}
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

// botNameOK is the bot name rule, spelled out: 1 to 63 bytes, each one of
// a-z 0-9 _ -, the first a letter or a digit.
func botNameOK(name string) bool {
	if len(name) < 1 || len(name) > 63 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		lowerOrDigit := ('a' <= c && c <= 'z') || ('0' <= c && c <= '9')
		if !lowerOrDigit && (i == 0 || (c != '_' && c != '-')) {
			return false
		}
	}
	return true
}

// snapNameOK is the snapshot name rule, spelled out: 1 to 128 bytes, each
// one of A-Z a-z 0-9 . _ -, the first a letter or a digit.
func snapNameOK(name string) bool {
	if len(name) < 1 || len(name) > 128 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9')
		if !alnum && (i == 0 || (c != '.' && c != '_' && c != '-')) {
			return false
		}
	}
	return true
}
