#!/bin/bash
# check-clean.sh: after the tests, nothing of theirs is left on the machine:
# no mount (under the test root, submounts such as data/ binds included, or
# on a memohfs mount whose server is gone), no process (found by its command
# line, its working dir, deleted or not, or its executable under the test
# root, or as a descendant of one), no containerd shim of a test's
# containerd or `memohfs up` (its bundle, its socket or its daemon's socket
# under the test root or in the socket dir of an up instance a test
# registered), no socket dir of such an instance, no bridge, no loop
# device, no test cgroup, no run dir.
#
# What belongs to a run that is still alive (its dir's owner stamp, "<pid>
# <start time>", names a live process: another `go test` on this machine) is
# its own business and left out; `make test` runs this after its own runs
# ended, so on a machine of its own everything is checked.
set -u
root=${MEMOHFS_TEST_ROOT:-/tmp/mfs-test}
rundirs=/run/memohfs
fail=0
say() { echo "check-clean: $*" >&2; fail=1; }

# alive STAMP: the stamped process still runs (same pid, same start time).
alive() {
	local pid=${1%% *} start=${1#* } stat rest
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	{ stat=$(<"/proc/$pid/stat"); } 2>/dev/null || return 1
	read -ra f <<<"${stat##*) }"
	[[ ${f[0]} != Z && ${f[19]} == "$start" ]]
}

declare -A live=()
for d in "$root"/*/; do
	[[ -d $d ]] || continue
	id=$(basename "$d")
	if [[ -f $d/owner ]] && alive "$(cat "$d/owner")"; then
		live[$id]=1
	fi
done
(( ${#live[@]} > 0 )) && echo "check-clean: leaving out ${#live[@]} live run(s) of other test processes: ${!live[*]}"

# run_of PATH: the run dir name under root a path is in ("" if none).
run_of() {
	local rest=${1#"$root"/}
	[[ $rest == "$1" ]] && return
	echo "${rest%%/*}"
}
# mine PATH: the path is under root and not in a live run's dir.
mine() {
	[[ $1 == "$root" || $1 == "$root"/* ]] || return 1
	local id
	id=$(run_of "$1")
	[[ -z $id || -z ${live[$id]:-} ]]
}

# The socket dirs of the up instances registered by runs that are not
# alive (<run>/up/<hash>, holding the state dir).
declare -A updirs=()
for rec in "$root"/*/up/*; do
	[[ -f $rec ]] || continue
	id=$(run_of "$rec")
	[[ -n ${live[$id]:-} ]] && continue
	updirs[$rundirs/$(basename "$rec")]=1
done

# Mounts: every mount under root (but a live run's), and every mount on
# a memohfs FUSE mount elsewhere whose server is gone. A mount on a
# memohfs mount (a data/ bind, say) is named with the mount it is on: a
# bind a dead or killed memohfs left stays in the mount table under its
# mount, and keeps the bot's data dir busy.
mps=() types=()
declare -A memoh=() dead=()
while read -r mp fstype; do
	mp=$(printf '%b' "$mp")
	mps+=("$mp") types+=("$fstype")
	[[ $fstype == fuse.memohfs ]] && memoh[$mp]=1
done < <(awk '{for (i = 7; $i != "-"; i++); print $5, $(i+1)}' /proc/self/mountinfo)
# on_memoh MP: the memohfs mount MP is on (below it), "" if none.
on_memoh() {
	local p=$1
	while [[ $p == /*/* ]]; do
		p=${p%/*}
		[[ -n ${memoh[$p]:-} ]] && { echo "$p"; return; }
	done
	[[ $p != / && -n ${memoh[/]:-} ]] && echo /
}
# gone MP: the FUSE server of the mount on MP is gone or hangs (statfs
# always reaches the server; a stuck one is killed after 2 s).
gone() {
	local out
	if [[ -z ${dead[$1]:-} ]]; then
		dead[$1]=no
		if ! out=$(timeout -s KILL 2 stat -f -- "$1" 2>&1 >/dev/null); then
			[[ -z $out || $out == *"not connected"* || $out == *"aborted"* ]] && dead[$1]=yes
		fi
	fi
	[[ ${dead[$1]} == yes ]]
}
for i in "${!mps[@]}"; do
	mp=${mps[$i]} fstype=${types[$i]}
	top=$(on_memoh "$mp")
	if mine "$mp"; then
		say "mount left: $mp ($fstype${top:+, on the memohfs mount $top})"
	elif [[ -n $top ]] && gone "$top"; then
		say "mount left: $mp ($fstype, on the memohfs mount $top, whose server is gone)"
	elif [[ $fstype == fuse.memohfs && -z $top ]] && [[ $mp != "$root" && $mp != "$root"/* ]] && gone "$mp"; then
		say "memohfs mount left, its server gone: $mp"
	fi
done

# Processes, and their descendants.
declare -A why=() parent=() cmds=()
for p in /proc/[0-9]*; do
	pid=${p#/proc/}
	[[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
	{ mapfile -d '' -t args <"$p/cmdline"; } 2>/dev/null || continue
	(( ${#args[@]} > 0 )) || continue
	cmd="${args[*]}"
	{ stat=$(<"$p/stat"); } 2>/dev/null || continue
	read -ra f <<<"${stat##*) }"
	[[ ${f[0]} == Z ]] && continue
	parent[$pid]=${f[1]}
	cmds[$pid]=$cmd
	cwd=$(readlink "$p/cwd" 2>/dev/null)
	cwd=${cwd% (deleted)}
	exe=$(readlink "$p/exe" 2>/dev/null)
	exe=${exe% (deleted)}
	for arg in "${args[@]}"; do
		arg=${arg#*=}
		if [[ $arg == "$root"/* ]] && mine "$arg"; then
			why[$pid]="its command line names $arg"
			break
		fi
		for u in "${!updirs[@]}"; do
			if [[ $arg == "$u"/* ]]; then
				why[$pid]="its command line names $arg, in the socket dir of a test's memohfs up"
				break 2
			fi
		done
	done
	if [[ -z ${why[$pid]:-} ]] && mine "$cwd"; then
		why[$pid]="its working dir is $cwd"
	fi
	if [[ -z ${why[$pid]:-} ]] && mine "$exe"; then
		why[$pid]="it runs $exe"
	fi
	# A containerd shim: its working dir is its bundle, -address is its
	# containerd's socket.
	{ comm=$(<"$p/comm"); } 2>/dev/null
	if [[ -z ${why[$pid]:-} && $comm == containerd-shim* ]]; then
		addr=$(sed -n 's/.* -address \([^ ]*\).*/\1/p' <<<"$cmd")
		if mine "$addr"; then
			why[$pid]="a containerd shim of a test's containerd ($addr)"
		fi
		for u in "${!updirs[@]}"; do
			[[ $addr == "$u"/* ]] && why[$pid]="a containerd shim of a test's memohfs up ($addr)"
		done
	fi
done
for pid in "${!cmds[@]}"; do
	if [[ -n ${why[$pid]:-} ]]; then
		say "process left: $pid: ${cmds[$pid]} (${why[$pid]})"
		continue
	fi
	a=${parent[$pid]:-0} n=0
	while (( a > 1 && n < 64 )); do
		if [[ -n ${why[$a]:-} ]]; then
			say "process left: $pid: ${cmds[$pid]} (a descendant of $a, whose ${why[$a]#its })"
			break
		fi
		a=${parent[$a]:-0} n=$((n + 1))
	done
done

# Socket dirs of test up instances.
for u in "${!updirs[@]}"; do
	[[ -e $u ]] && say "socket dir of a test's memohfs up left: $u"
done

# Bridges (mfst<run id>).
for br in $(ip -o link show 2>/dev/null | grep -oE 'mfst[0-9a-f]+' | sort -u); do
	[[ -n ${live[${br#mfst}]:-} ]] && continue
	say "bridge left: $br"
done

# Loop devices backed by files under root.
while IFS= read -r line; do
	f=$(sed -n 's/.*(\(.*\)).*/\1/p' <<<"$line")
	if mine "$f"; then
		say "loop device left: ${line%%:*} ($f)"
	fi
done < <(losetup -a 2>/dev/null)

# Test cgroups (containerd namespaces of tests: t<n>-<test>). Their names do
# not say which run made them: checked only when no other run is alive.
if ls -d /sys/fs/cgroup/*/t[0-9]*-* /sys/fs/cgroup/t[0-9]*-* >/dev/null 2>&1; then
	if (( ${#live[@]} == 0 )); then
		say "test cgroups left: $(ls -d /sys/fs/cgroup/*/t[0-9]*-* /sys/fs/cgroup/t[0-9]*-* 2>/dev/null | head -5 | tr '\n' ' ')"
	else
		echo "check-clean: test cgroups not checked: other runs are alive"
	fi
fi

# Run dirs.
for e in "$root"/* "$root"/.[!.]*; do
	[[ -e $e ]] || continue
	name=$(basename "$e")
	case $name in
	.lock) continue ;;
	ip_forward.orig) (( ${#live[@]} > 0 )) && continue ;;
	esac
	[[ -n ${live[$name]:-} ]] && continue
	say "left in $root: $name"
done

if (( fail == 0 )); then
	echo "check-clean: no mounts, processes, shims, bridges, loop devices, cgroups or run dirs left"
fi
exit $fail
