package shquote

import (
	"os/exec"
	"strings"
	"testing"
)

// What Join renders, sh reads back as the same words.
func TestJoinReadsBack(t *testing.T) {
	words := []string{"plain", "", "two words", "it's", `a"b`, "$HOME", "back\\slash", "new\nline", "*", "-x=1,2:3"}
	out, err := exec.Command("sh", "-c", `for w in `+Join(words)+`; do printf '%s\0' "$w"; done`).Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	if strings.Join(got, "|") != strings.Join(words, "|") {
		t.Fatalf("read back %q, want %q", got, words)
	}
}
