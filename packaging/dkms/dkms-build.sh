#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Builds miglock.ko from this tree against the kernel build directory KDIR:
#   sh dkms-build.sh KDIR [make arguments...]
# A Rust module needs the kernel's Rust metadata and the very rustc (and
# bindgen, and clang) the kernel was built with: this checks each and
# names what is missing before kbuild fails less clearly. MIGLOCK_RUSTC,
# MIGLOCK_BINDGEN and MIGLOCK_CLANG_SUFFIX (e.g. -19) override the search.
set -eu

kdir=${1:?usage: sh dkms-build.sh KDIR [make arguments...]}
shift
cfg=$kdir/.config
die() {
	echo "miglock: cannot build for the kernel in $kdir: $*" >&2
	exit 1
}

[ -f "$cfg" ] || die "it has no .config (are its headers installed?)"
grep -q '^CONFIG_RUST=y' "$cfg" ||
	die "it has no Rust support: CONFIG_RUST=y is not in its .config (Debian's own kernels build without it; see the admin guide, \"Install in a guest\")"
for f in rust/libkernel.rmeta rust/libmacros.so; do
	[ -f "$kdir/$f" ] ||
		die "$f is missing: its headers carry no Rust metadata (build the module against the kernel's full build directory)"
done

text() { sed -n "s/^$1=\"\\(.*\\)\"\$/\\1/p" "$cfg"; }

# rustc: exactly the kernel's, since .rmeta files are tied to it.
want=$(text CONFIG_RUSTC_VERSION_TEXT)
found=
rustc=
for r in ${MIGLOCK_RUSTC:-} /usr/bin/rustc "$(command -v rustc || true)" /usr/local/bin/rustc; do
	[ -n "$r" ] && [ -x "$r" ] || continue
	v=$("$r" --version 2>/dev/null || true)
	if [ "$v" = "$want" ]; then rustc=$r; break; fi
	found="$found $r ($v);"
done
[ -n "$rustc" ] || die "no rustc is the kernel's \"$want\" (found:${found:- none}); set MIGLOCK_RUSTC"

# bindgen: the module generates bindings the kernel's crate lacks.
want=$(text CONFIG_BINDGEN_VERSION_TEXT)
found=
bindgen=
for b in ${MIGLOCK_BINDGEN:-} "$(command -v bindgen || true)" /usr/local/bin/bindgen /root/.cargo/bin/bindgen /usr/bin/bindgen; do
	[ -n "$b" ] && [ -x "$b" ] || continue
	v=$("$b" --version 2>/dev/null || true)
	if [ "$v" = "$want" ]; then bindgen=$b; break; fi
	found="$found $b ($v);"
done
[ -n "$bindgen" ] || die "no bindgen is the kernel's \"$want\" (found:${found:- none}); set MIGLOCK_BINDGEN"

# The C compiler: dkms appends CC=clang LD=ld.lld for clang kernels; the
# suffix of the clang the kernel names (clang-19) is what works, so those
# are dropped in favour of LLVM=.
llvm=
if grep -q '^CONFIG_CC_IS_CLANG=y' "$cfg"; then
	major=$(($(sed -n 's/^CONFIG_CLANG_VERSION=//p' "$cfg") / 10000))
	if [ -n "${MIGLOCK_CLANG_SUFFIX:-}" ]; then
		llvm=LLVM=$MIGLOCK_CLANG_SUFFIX
	elif command -v "clang-$major" >/dev/null; then
		llvm=LLVM=-$major
	elif clang --version 2>/dev/null | grep -q "version $major\\."; then
		llvm=LLVM=1
	else
		die "it was built with clang $major, which is not installed (clang-$major, lld-$major, llvm-$major)"
	fi
fi

release=$(cat "$kdir/include/config/kernel.release" 2>/dev/null || echo unknown)
case $release in
6.12.*) ;;
*) echo "miglock: written against Linux 6.12's Rust kernel crate; $release is untested" >&2 ;;
esac

args=
for a in "$@"; do
	case $a in CC=* | LD=*) [ -z "$llvm" ] && args="$args $a" ;; *) args="$args $a" ;; esac
done
# shellcheck disable=SC2086 # $llvm and $args are lists of words
exec make -C "$kdir" M="$PWD" $llvm RUSTC="$rustc" HOSTRUSTC="$rustc" \
	BINDGEN="$bindgen" $args modules
