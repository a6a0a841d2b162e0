package control

import (
	"strings"
	"testing"
	"unicode"
)

// FuzzParseCtl: any write either parses into commands of the table, with
// argument counts in range and no blank or NUL inside a word, that print
// back to text parsing to the same commands; or is refused as EINVAL with
// a reason. Nothing panics.
func FuzzParseCtl(f *testing.F) {
	for _, s := range []string{
		"start", "start\n", "stop 5\n", "stop\nstart\n", "snapshot v1", "snapshot",
		"restore pre-restore-3", "autostart on", "autostart maybe", "restart\n\n\n",
		"", "\n", " \t ", "START", "stop 1 2", "stop -1", "stop 99999999999",
		"snapshot a/b", "restore ../x", "start\x00", "\xff\xfe", "stop\r\n",
		strings.Repeat("start\n", 1000), "snapshot " + strings.Repeat("x", 200),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		cmds, err := ParseCtl(text)
		if err != nil {
			if KindOf(err) != KindInvalid {
				t.Fatalf("%q refused as %v, want invalid (EINVAL): %v", text, KindOf(err), err)
			}
			if strings.TrimSpace(err.Error()) == "" {
				t.Fatalf("%q refused without a reason", text)
			}
			if cmds != nil {
				t.Fatalf("%q refused but returned commands %v", text, cmds)
			}
			return
		}
		if len(cmds) == 0 {
			t.Fatalf("%q accepted with no commands", text)
		}
		var lines []string
		for _, c := range cmds {
			v := lookupVerb(c.Verb)
			if v == nil || c.v != v {
				t.Fatalf("%q: verb %q is not in the table", text, c.Verb)
			}
			if len(c.Args) < v.min || len(c.Args) > v.max {
				t.Fatalf("%q: %d args for %s", text, len(c.Args), v.usage)
			}
			for _, a := range c.Args {
				if a == "" || strings.ContainsRune(a, 0) || strings.IndexFunc(a, unicode.IsSpace) >= 0 {
					t.Fatalf("%q: bad argument word %q", text, a)
				}
			}
			lines = append(lines, c.String())
		}
		again, err := ParseCtl(strings.Join(lines, "\n"))
		if err != nil || len(again) != len(cmds) {
			t.Fatalf("%q: printed commands do not parse back: %v", text, err)
		}
		for i := range cmds {
			if again[i].String() != cmds[i].String() {
				t.Fatalf("%q: %q became %q", text, cmds[i], again[i])
			}
		}
	})
}
