package control_test

import (
	"fmt"

	"github.com/memohfs/memohfs/control"
)

// Reading a bot's ctl file gives Help: every verb, its arguments and one
// line of what it does. README.md quotes this output (readme_test.go
// holds the two together).
func ExampleHelp() {
	fmt.Print(control.Help())
	// Output:
	// start            start the bot (creating its container if missing); returns once it runs
	// stop [SECONDS]   SIGTERM, wait SECONDS (default 10), then SIGKILL; releases its address
	// restart          stop, then start
	// snapshot [NAME]  live snapshot of rootfs and data/ (NAME defaults to v<version>)
	// autostart on|off start the bot again when memohfs starts and finds it stopped
	// restore NAME     snapshot as pre-restore-<version>, stop, put rootfs and data/ back to NAME, start if it ran
}

// A ctl write is one verb per line; blank lines are ignored and the last
// newline is optional. The whole write is parsed before anything runs: one
// bad line refuses all of it, with an invalid error (EINVAL through the
// mount) that names the line.
func ExampleParseCtl() {
	cmds, err := control.ParseCtl("stop 5\nsnapshot before-upgrade\n\nautostart on\nstart\n")
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, c := range cmds {
		fmt.Printf("%-9s %q\n", c.Verb, c.Args)
	}

	_, err = control.ParseCtl("start\nrestore\n")
	fmt.Printf("%s: %v\n", control.KindOf(err), err)
	// Output:
	// stop      ["5"]
	// snapshot  ["before-upgrade"]
	// autostart ["on"]
	// start     []
	// invalid: ctl line 2: usage: restore NAME
}
