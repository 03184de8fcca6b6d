#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Puts the Cargo build directories (tools/target, tools/fuzz/target) in the
# cache outside the checkout, so that a fresh clone (as CI makes) reuses
# the compiled crates.io dependencies instead of building them again.
# Keyed by the toolchain (cargo -vV, rustc -vV): a new compiler never sees
# another's artifacts. Within a key, cargo's own fingerprints decide what is
# stale; the checkout's crates differ per path, and binaries are copied out
# again on every build, so one checkout never runs another's.
# A directory that already exists (a build from before) is left alone.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cache=${MIGLOCK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/miglock}
# Past this many GiB, a key's directory starts over (every checkout path
# adds its own copy of the workspace's crates).
MAX_GIB=${MIGLOCK_CARGO_CACHE_GIB:-24}

say() { printf 'cargo-target: %s\n' "$*" >&2; }

link() { # link DIR TOOLCHAIN-CMD...: DIR/target -> the cache for that toolchain
	local dir=$1 key t
	shift
	[ -e "$dir/target" ] && [ ! -L "$dir/target" ] && return 0
	key=$(cd "$dir" && { cargo "$@" -vV && rustc "$@" -vV; } 2>/dev/null | sha256sum | cut -c1-16)
	t=$cache/cargo/$(basename "$dir")-$key
	mkdir -p "$t"
	if [ "$(du -s --block-size=1G "$t" | cut -f1)" -gt "$MAX_GIB" ]; then
		say "$t holds more than $MAX_GIB GiB: starting it over"
		rm -rf "$t" && mkdir -p "$t"
	fi
	[ "$(readlink "$dir/target" 2>/dev/null)" = "$t" ] || ln -sfn "$t" "$dir/target"
}

link "$top/tools"
# The fuzz targets build with the nightly toolchain.
link "$top/tools/fuzz" +nightly
