package fsnodes_test

import (
	"strings"
	"testing"

	"github.com/memohfs/memohfs/fsnodes"
)

// cmdStack is a stack with one running bot.
func cmdStack(t *testing.T, opts fsnodes.Options) (*stack, string) {
	t.Helper()
	s := newStack(t, opts)
	s.mkbot("b")
	s.mustCtl("b", "start")
	return s, "b"
}

// The shell way, with plain tools: clone, exec, then data, stderr and wait.
func TestCmdShell(t *testing.T) {
	s, _ := cmdStack(t, fsnodes.Options{})
	out := s.mustSh(`set -e
exec 3<>$M/b/cmd/clone
read n <&3
echo "n=$n"
echo 'exec sh -c "read l; echo got:$l; echo oops >&2; exit 3"' >&3
echo hello > $M/b/cmd/$n/data
echo "data=$(cat $M/b/cmd/$n/data)"
echo "stderr=$(cat $M/b/cmd/$n/stderr)"
echo "wait=$(cat $M/b/cmd/$n/wait)"
cat $M/b/cmd/$n/status
`)
	t.Log(out)
	for _, want := range []string{"data=got:hello\n", "stderr=oops\n", " exit 3\n", "state done\n", "status exit 3\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("want %q in:\n%s", want, out)
		}
	}
}
