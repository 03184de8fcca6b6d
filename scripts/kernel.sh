#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Builds the Rust-enabled Linux 6.12 test kernel from Debian's linux-source-6.12,
# the fragment tests/kernel/miglock.config and patches/, cached outside the
# repository under a key of all of those plus the toolchain versions.
#
#   scripts/kernel.sh kdir    print the build directory for the current key
#   scripts/kernel.sh build   build it unless already cached; print the directory
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cache=${MIGLOCK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/miglock}
fragment=$top/tests/kernel/miglock.config
read -r -a kmake <<<"$("$top/scripts/toolchain.sh")"
jobs=${MIGLOCK_JOBS:-$(nproc)}
# Bump when the way the kernel is built changes (part of the cache key).
RECIPE=1

say() { printf 'kernel: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

src_tar=$(ls /usr/src/linux-source-6.12.tar.* 2>/dev/null | head -n1)
[ -n "$src_tar" ] || die "linux-source-6.12 is not installed (run 'make deps')"

patch_list() { sed -e '/^#/d' -e '/^[[:space:]]*$/d' "$top/patches/series"; }

key() {
	{
		dpkg-query -W -f='${Version}\n' linux-source-6.12
		echo "recipe $RECIPE"
		cat "$fragment" "$top/patches/series"
		patch_list | while read -r p; do cat "$top/patches/$p"; done
		/usr/bin/rustc --version
		"${CARGO_HOME:-$HOME/.cargo}/bin/bindgen" --version 2>/dev/null || true
		clang-19 --version | head -n1
		echo "${kmake[*]}"
	} | sha256sum | cut -c1-16
}

srcver=$(dpkg-query -W -f='${Version}' linux-source-6.12 | cut -d- -f1)
kdir=$cache/linux-$srcver-$(key)

case "${1:-build}" in
kdir) echo "$kdir"; exit 0 ;;
build) ;;
*) die "usage: $0 kdir|build" ;;
esac

if [ -f "$kdir/.miglock-built" ]; then
	say "using cached test kernel $kdir"
	echo "$kdir"
	exit 0
fi

mkdir -p "$cache"
# Built in place (kbuild records absolute paths); the marker file written
# last says the tree is complete, so an interrupted build starts over.
work=$kdir
rm -rf "$work"
mkdir -p "$work"
log=$work/build.log
start=$SECONDS
say "building Linux $srcver (Rust, KUnit) in $kdir; log: $log"
say "unpacking $src_tar"
tar xf "$src_tar" -C "$work" --strip-components=1

patch_list | while read -r p; do
	say "applying patches/$p"
	patch -s -p1 -d "$work" <"$top/patches/$p" || die "patches/$p does not apply"
done

cp "$fragment" "$work/kernel/configs/miglock.config"
show_tail() {
	say "failed; errors in $log:"
	grep -E -A3 '(error|Error)[: ]' "$log" | head -n 30 >&2
	say "last lines:"
	tail -n 15 "$log" >&2
	exit 1
}
make -C "$work" "${kmake[@]}" tinyconfig miglock.config >"$log" 2>&1 || show_tail

# Kconfig silently drops options whose dependencies are unmet: catch that here.
bad=()
while read -r line; do
	case "$line" in
	CONFIG_*=*) grep -qxF "$line" "$work/.config" || bad+=("$line") ;;
	"# CONFIG_"*" is not set")
		opt=${line#\# }; opt=${opt%% *}
		grep -q "^$opt=" "$work/.config" && bad+=("$line") ;;
	esac
done <"$fragment"
[ ${#bad[@]} -eq 0 ] || die "config options not honoured (unmet dependencies?): ${bad[*]}"

say "compiling with $jobs jobs (a tinyconfig build takes about 5 minutes on 2 cores)"
set +e
make -C "$work" "${kmake[@]}" -j"$jobs" all 2>&1 | tee -a "$log" | {
	n=0
	while IFS= read -r l; do
		case $l in "  "[A-Z]*) n=$((n + 1)) ;; *) continue ;; esac
		[ $((n % 250)) -ne 0 ] || say "$n build steps done ($((SECONDS - start)) s)"
	done
}
rc=${PIPESTATUS[0]}
set -e
[ "$rc" = 0 ] || show_tail
[ -f "$work/arch/x86/boot/bzImage" ] && [ -f "$work/rust/kernel.o" ] || show_tail

touch "$work/.miglock-built"
say "built in $((SECONDS - start)) s"

# Keep the two newest kernels; each is a full tree.
ls -1dt "$cache"/linux-*/ 2>/dev/null | tail -n +3 | while read -r old; do
	say "pruning old kernel build $old"
	rm -rf "$old"
done
echo "$kdir"
