package control

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// A verb is one line of the ctl language, as in Plan 9's devproc: its name,
// how many arguments it takes, its usage and help, and its handler. The
// handler runs with the bot's operation lock held.
type verb struct {
	name     string
	min, max int // argument counts
	usage    string
	help     string
	run      func(c *Controller, ctx context.Context, b *bot, args []string) error
}

// verbs is the ctl table; reading ctl prints it.
var verbs = []verb{
	{"start", 0, 0, "start", "start the bot (creating its container if missing); returns once it runs",
		func(c *Controller, ctx context.Context, b *bot, _ []string) error { return c.start(ctx, b) }},
	{"stop", 0, 1, "stop [SECONDS]", "SIGTERM, wait SECONDS (default 10), then SIGKILL; releases its address",
		func(c *Controller, ctx context.Context, b *bot, args []string) error {
			grace := c.opts.StopGrace
			if len(args) == 1 {
				g, err := parseSeconds(args[0])
				if err != nil {
					return err
				}
				grace = g
			}
			return c.stop(ctx, b, grace)
		}},
	{"restart", 0, 0, "restart", "stop, then start",
		func(c *Controller, ctx context.Context, b *bot, _ []string) error {
			if err := c.stop(ctx, b, c.opts.StopGrace); err != nil {
				return err
			}
			return c.start(ctx, b)
		}},
	{"snapshot", 0, 1, "snapshot [NAME]", "live snapshot of rootfs and data/ (NAME defaults to v<version>)",
		func(c *Controller, ctx context.Context, b *bot, args []string) error {
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			_, err := c.takeSnapshot(ctx, b, name, sourceManual)
			return err
		}},
	{"autostart", 1, 1, "autostart on|off", "start the bot again when memohfs starts and finds it stopped",
		func(c *Controller, ctx context.Context, b *bot, args []string) error {
			var on bool
			switch args[0] {
			case "on":
				on = true
			case "off":
			default:
				return errorf(KindInvalid, "autostart: want on or off, not %q", truncate(args[0], 40))
			}
			return c.setAutoStart(ctx, b, on)
		}},
	{"restore", 1, 1, "restore NAME", "snapshot as pre-restore-<version>, stop, put rootfs and data/ back to NAME, start if it ran",
		func(c *Controller, ctx context.Context, b *bot, args []string) error {
			err := c.restore(ctx, b, args[0])
			c.m.restore(err)
			return err
		}},
}

// maxGrace bounds stop's SECONDS.
const maxGrace = time.Hour

func parseSeconds(s string) (time.Duration, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || time.Duration(n)*time.Second > maxGrace {
		return 0, errorf(KindInvalid, "stop: SECONDS must be a whole number from 0 to %d, not %q", int(maxGrace.Seconds()), s)
	}
	return time.Duration(n) * time.Second, nil
}

// Command is one parsed ctl line.
type Command struct {
	Verb string
	Args []string
	v    *verb
}

func (c Command) String() string { return strings.Join(append([]string{c.Verb}, c.Args...), " ") }

// maxCtlWrite bounds what one ctl write may hold.
const maxCtlWrite = 64 << 10

// ParseCtl parses the text of one ctl write: one verb per line, words
// separated by blanks, blank lines ignored, a trailing newline optional.
// The whole write is checked before anything runs: an unknown verb or a
// wrong argument count anywhere refuses all of it.
func ParseCtl(text string) ([]Command, error) {
	if len(text) > maxCtlWrite {
		return nil, errorf(KindInvalid, "ctl: a write holds at most %d bytes", maxCtlWrite)
	}
	var cmds []Command
	for i, line := range strings.Split(text, "\n") {
		if strings.ContainsRune(line, 0) {
			return nil, errorf(KindInvalid, "ctl line %d: NUL byte", i+1)
		}
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		v := lookupVerb(fields[0])
		if v == nil {
			return nil, errorf(KindInvalid, "ctl line %d: unknown verb %q (read ctl for the list)", i+1, truncate(fields[0], 40))
		}
		args := fields[1:]
		if len(args) < v.min || len(args) > v.max {
			return nil, errorf(KindInvalid, "ctl line %d: usage: %s", i+1, v.usage)
		}
		cmds = append(cmds, Command{Verb: v.name, Args: args, v: v})
	}
	if len(cmds) == 0 {
		return nil, errorf(KindInvalid, "ctl: empty write (read ctl for the list)")
	}
	return cmds, nil
}

func lookupVerb(name string) *verb {
	for i := range verbs {
		if verbs[i].name == name {
			return &verbs[i]
		}
	}
	return nil
}

// Help is what reading ctl gives: every verb with one line of help.
func Help() string {
	var b strings.Builder
	for _, v := range verbs {
		fmt.Fprintf(&b, "%-16s %s\n", v.usage, v.help)
	}
	return b.String()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
