package control

import "time"

// CrashAfter returns o with Delete made to stop dead after step
// ("intent", "runtime", "trash" or "record"), leaving memory and disk as
// a process killed there would.
func CrashAfter(o Options, step string) Options {
	o.crashAfter = func(s string) bool { return s == step }
	return o
}

// RemoveOldTrash runs one trash sweep as if it were now.
func RemoveOldTrash(c *Controller, now time.Time) { c.removeOldTrash(now) }
