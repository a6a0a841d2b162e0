package control

// CrashAfter returns o with Delete made to stop dead after step
// ("intent", "runtime", "trash" or "record"), leaving memory and disk as
// a process killed there would.
func CrashAfter(o Options, step string) Options {
	o.crashAfter = func(s string) bool { return s == step }
	return o
}
