package control_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/memohfs/memohfs/control"
)

// readmeHelpMarker is the line of README.md that precedes its quote of
// control.Help() (an HTML comment: it does not show on the rendered page).
const readmeHelpMarker = "<!-- ctl-help:"

// TestREADMEQuotesHelp: the ctl verb list README.md shows is what reading
// ctl gives (control.Help, whose output ExampleHelp pins), verbatim: a
// verb added, renamed or reworded in verbs.go fails here until README.md
// says the same.
func TestREADMEQuotesHelp(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := quotedBlock(string(b), readmeHelpMarker)
	if err != nil {
		t.Fatalf("README.md: %v", err)
	}
	if want := control.Help(); got != want {
		t.Errorf("README.md's ctl verb list (the fenced block after %q) is not control.Help()'s output.\n"+
			"README.md has:\n%s\ncontrol.Help() gives (paste it in):\n%s", readmeHelpMarker, got, want)
	}
}

// quotedBlock returns the text of the fenced block that follows the one
// line of doc starting with marker (blank lines between them allowed).
func quotedBlock(doc, marker string) (string, error) {
	lines := strings.Split(doc, "\n")
	at := -1
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), marker) {
			if at >= 0 {
				return "", errors.New("two lines start with " + marker + ": want one")
			}
			at = i
		}
	}
	if at < 0 {
		return "", errors.New("no line starts with " + marker)
	}
	i := at + 1
	for i < len(lines) && strings.TrimSpace(lines[i]) == "" {
		i++
	}
	if i == len(lines) || !strings.HasPrefix(lines[i], "```") {
		return "", errors.New("no fenced block (```) after " + marker)
	}
	var out strings.Builder
	for i++; i < len(lines); i++ {
		if strings.HasPrefix(lines[i], "```") {
			return out.String(), nil
		}
		out.WriteString(lines[i] + "\n")
	}
	return "", errors.New("the fenced block after " + marker + " is not closed")
}
