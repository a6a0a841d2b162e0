#!/usr/bin/env bash
# Install what memohfs needs to build, run and test, idempotently:
#   - Debian packages (only the missing ones; apt-get update only when needed)
#   - containerd, ctr and containerd-shim-runc-v2 built from the containerd
#     module at the version go.mod pins (its `tool` directives), cached in
#     .cache/containerd/<version>/bin and rebuilt only when missing.
# Prints the containerd bin dir as its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(runc containernetworking-plugins fuse3 postgresql busybox-static iptables iproute2 rsync fio vim git sqlite3 attr curl)

log() { printf 'deps: %s\n' "$*" >&2; }

missing=()
for p in "${PACKAGES[@]}"; do
	status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	[[ $status == "install ok installed" ]] || missing+=("$p")
done
if ((${#missing[@]})); then
	if [[ $(id -u) != 0 ]]; then
		log "missing packages ${missing[*]}: run as root (or: sudo apt-get install ${missing[*]})"
		exit 1
	fi
	log "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# A fresh machine has empty package lists: update first then.
	if [[ -z $(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -print -quit 2>/dev/null) ]]; then
		apt-get update -qq
	fi
	if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
fi

# containerd at the version go.mod pins.
version=$(go list -m -f '{{.Version}}' github.com/containerd/containerd/v2)
bindir=$PWD/.cache/containerd/$version/bin
tools=(containerd ctr containerd-shim-runc-v2)
ok=1
for t in "${tools[@]}"; do [[ -x $bindir/$t ]] || ok=0; done
if ((ok)) && ! "$bindir/containerd" --version 2>/dev/null | grep -q "${version#v}"; then ok=0; fi
if ((!ok)); then
	log "building containerd $version (a few minutes on a cold cache)"
	tmp=$bindir.tmp.$$
	rm -rf "$tmp"
	mkdir -p "$tmp"
	pkgs=()
	for t in "${tools[@]}"; do
		pkgs+=("github.com/containerd/containerd/v2/cmd/$t")
	done
	# Stamp the version as containerd's own Makefile does.
	ldflags="-X github.com/containerd/containerd/v2/version.Version=${version#v} -X github.com/containerd/containerd/v2/version.Revision=memohfs-deps"
	go build -trimpath -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}"
	rm -rf "$bindir"
	mv "$tmp" "$bindir"
fi
log "containerd $("$bindir/containerd" --version | awk '{print $3}') in $bindir"
echo "$bindir"
