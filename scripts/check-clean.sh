#!/bin/bash
# check-clean.sh: after the tests, nothing of theirs is left on the machine:
# no mount, no process, no bridge, no loop device, no test cgroup, no run
# dir with content.
set -u
root=${MEMOHFS_TEST_ROOT:-/tmp/mfs-test}
fail=0
say() { echo "check-clean: $*" >&2; fail=1; }

if grep -qE " (fuse\.memohfs|fuse\.rawBridge) " /proc/self/mountinfo && grep -E " (fuse\.memohfs|fuse\.rawBridge) " /proc/self/mountinfo | grep -q "$root"; then
	say "FUSE mounts left: $(grep -E "$root" /proc/self/mountinfo | awk '{print $5}' | tr '\n' ' ')"
fi
if grep -q " $root/" /proc/self/mountinfo; then
	say "mounts left under $root: $(grep " $root/" /proc/self/mountinfo | awk '{print $5}' | head -5 | tr '\n' ' ')"
fi
if pgrep -f "$root/" >/dev/null; then
	say "processes left: $(pgrep -af "$root/" | head -5)"
fi
# A containerd shim or a bot's process runs in its bundle or rootfs under root.
for p in /proc/[0-9]*; do
	cwd=$(readlink "$p/cwd" 2>/dev/null) || continue
	if [[ $cwd == "$root"/* ]]; then
		say "process ${p#/proc/} left with its working dir in $cwd"
	fi
done
if ip -o link show 2>/dev/null | grep -qE ": mfst[0-9a-f]+[:@]"; then
	say "bridges left: $(ip -o link show | grep -oE 'mfst[0-9a-f]+' | sort -u | tr '\n' ' ')"
fi
if losetup -a 2>/dev/null | grep -q "$root/"; then
	say "loop devices left: $(losetup -a | grep "$root/" | cut -d: -f1 | tr '\n' ' ')"
fi
if ls -d /sys/fs/cgroup/*/t[0-9]*-* >/dev/null 2>&1; then
	say "test cgroups left: $(ls -d /sys/fs/cgroup/*/t[0-9]*-* | head -5 | tr '\n' ' ')"
fi
if [[ -d $root ]] && [[ -n $(ls -A "$root" 2>/dev/null | grep -v '^\.lock$') ]]; then
	say "run dirs left in $root: $(ls -A "$root" | head -5 | tr '\n' ' ')"
fi
if (( fail == 0 )); then
	echo "check-clean: no mounts, processes, bridges, cgroups or run dirs left"
fi
exit $fail
