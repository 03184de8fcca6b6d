#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Install (as root) and check everything the build and the tests need, on
# a machine that may have none of it yet: every step copes with a command
# that does not exist. Idempotent; one line when everything is present,
# a line per step otherwise. apt's own output goes to a log.
#
#   scripts/deps.sh          what 'make deps' (and so demo and test) needs
#   scripts/deps.sh fresh    that, plus what 'make test-fresh' needs
#
# tests/deps-check.sh runs this script on a stubbed empty machine and
# checks that every command the scripts and tests call comes from a
# package listed here (or from Debian's essential base).
set -euo pipefail

BINDGEN_VERSION=0.73.2
CARGO_FUZZ_VERSION=0.13.2
RUSTC_MIN=1.78.0          # Linux 6.12's minimum (scripts/min-tool-version.sh)
LLVM_MAJOR=19
DEBHELPER_MIN=13          # make deb: debhelper-compat 13, dh_installtmpfiles

DEB_PKGS=(
	linux-source-6.12 rustc-web rust-web-src rust-web-clippy
	clang-$LLVM_MAJOR lld-$LLVM_MAJOR llvm-$LLVM_MAJOR libclang-$LLVM_MAJOR-dev
	busybox-static
	bc flex bison libelf-dev libssl-dev cpio xz-utils lz4 make gcc libc6-dev patch
	# dpkg-buildpackage's build-essential; g++ for libfuzzer-sys (make fuzz).
	build-essential g++
	libvirt-daemon-driver-qemu libvirt-daemon libvirt-clients
	debhelper dh-dkms dpkg-dev systemd man-db procps kmod git
	# cargo reaches crates.io over TLS; deps-check parses the scripts.
	ca-certificates shfmt jq
)
# Only for 'make test-fresh' (the clean root it builds).
FRESH_PKGS=(mmdebstrap)
# From bookworm-backports (Debian 13's versions): QEMU 10.0. Debian 12's
# QEMU 7.2 loses dirty pages under TCG, so a migration test passing on it
# proves little (Documentation/testing.rst, "Which QEMU").
BACKPORTS=bookworm-backports
BACKPORTS_PKGS=(qemu-system-x86 qemu-guest-agent)
QEMU_MIN=10.0

cache=${MIGLOCK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/miglock}
aptlog=$cache/deps-apt.log

say() { printf 'deps: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

case "${1:-}" in
"") ;;
fresh) DEB_PKGS+=("${FRESH_PKGS[@]}") ;;
*) die "usage: $0 [fresh]" ;;
esac

# apt-get with its output in the log (shown when it fails).
apt() {
	mkdir -p "$cache"
	printf '\n$ apt-get %s\n' "$*" >>"$aptlog"
	DEBIAN_FRONTEND=noninteractive apt-get "$@" >>"$aptlog" 2>&1 && return 0
	tail -n 15 "$aptlog" | sed 's/^/    /' >&2
	return 1
}
apt_updated=
apt_update() {
	[ -z "$apt_updated" ] || return 0
	say "apt-get update"
	apt update -q || die "apt-get update failed (log: $aptlog)"
	apt_updated=1
}
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
need_root() { [ "$(id -u)" = 0 ] || die "$* (run 'make deps' as root)"; }
did=
# A command's output, or nothing where it is missing or fails: under
# pipefail, "$(cmd | awk)" of a missing cmd would end the script silently.
output() { "$@" 2>/dev/null || true; }

missing=()
for p in "${DEB_PKGS[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
	need_root "missing Debian packages: ${missing[*]}"
	apt_update
	say "installing ${#missing[@]} Debian packages (a few minutes on a new machine; log: $aptlog): ${missing[*]}"
	apt install -y -q --no-install-recommends "${missing[@]}" ||
		die "apt-get install failed for: ${missing[*]} (log: $aptlog)"
	did=1
fi

# Version checks: fail with what was found, not with a kbuild error later.
ver_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

# bookworm-backports, from the same mirror as bookworm itself.
backports_known() { output apt-cache policy | grep -q " $BACKPORTS/main"; }
add_backports() {
	local uri
	# Either file may be missing (a glob that matched nothing).
	uri=$(output awk '/^URIs:/ { u = $2 } /^Suites:/ && / bookworm( |$)/ { print u; exit }' \
		/etc/apt/sources.list.d/*.sources)
	[ -n "$uri" ] || uri=$(output awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' \
		/etc/apt/sources.list /etc/apt/sources.list.d/*.list)
	[ -n "$uri" ] || die "no bookworm source in /etc/apt to add $BACKPORTS beside"
	say "adding $BACKPORTS (from the mirror bookworm comes from)"
	printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: %s\n' \
		"$uri" "$BACKPORTS" /usr/share/keyrings/debian-archive-keyring.gpg \
		>"/etc/apt/sources.list.d/miglock-$BACKPORTS.sources"
	apt_updated=
	apt_update
}
# No QEMU yet is the normal case on a new machine: the version is empty, not an error.
qemu_version() { output qemu-system-x86_64 --version | awk '/version/ { print $4; exit }'; }
qemu_ver=$(qemu_version)
missing=()
for p in "${BACKPORTS_PKGS[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ] || ! ver_ge "${qemu_ver:-0}" "$QEMU_MIN"; then
	need_root "QEMU ${qemu_ver:-none} found, need >= $QEMU_MIN from $BACKPORTS"
	backports_known || add_backports
	say "installing QEMU from $BACKPORTS (log: $aptlog): ${BACKPORTS_PKGS[*]}"
	# No recommends: they would move mesa and libdrm too.
	apt install -y -q --no-install-recommends -t "$BACKPORTS" "${BACKPORTS_PKGS[@]}" ||
		die "apt-get install -t $BACKPORTS failed for: ${BACKPORTS_PKGS[*]} (log: $aptlog)"
	qemu_ver=$(qemu_version)
	did=1
fi
ver_ge "${qemu_ver:-0}" "$QEMU_MIN" || die "qemu-system-x86_64 is ${qemu_ver:-missing}; need >= $QEMU_MIN"

rustc_ver=$(output /usr/bin/rustc --version | awk '{print $2}')
[ -n "$rustc_ver" ] || die "/usr/bin/rustc (Debian rustc-web) does not run"
ver_ge "$rustc_ver" "$RUSTC_MIN" || die "/usr/bin/rustc is $rustc_ver; need >= $RUSTC_MIN"
[ -d "$(output /usr/bin/rustc --print sysroot)/lib/rustlib/src/rust/library/core" ] ||
	die "Rust library sources missing (package rust-web-src)"
clippy_ver=$(output /usr/bin/clippy-driver --rustc --version | awk '{print $2}')
[ "$clippy_ver" = "$rustc_ver" ] ||
	die "/usr/bin/clippy-driver is '$clippy_ver', rustc is $rustc_ver: install matching rust-web-clippy"
command -v clang-$LLVM_MAJOR >/dev/null || die "clang-$LLVM_MAJOR not found"
dh_ver=$(output dpkg-query -W -f='${Version}' debhelper)
ver_ge "${dh_ver:-0}" "$DEBHELPER_MIN" || die "debhelper is ${dh_ver:-missing}; make deb needs >= $DEBHELPER_MIN"
command -v systemd-analyze >/dev/null || die "systemd-analyze not found (package systemd): tests/packages.sh verifies the units with it"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found"
[ -x /bin/busybox ] || die "/bin/busybox (busybox-static) not found"
ls /usr/src/linux-source-6.12.tar.* >/dev/null 2>&1 ||
	die "/usr/src/linux-source-6.12.tar.* not found (package linux-source-6.12)"

# bindgen, pinned: the kernel's generated bindings depend on its version.
cargo_bin=${CARGO_HOME:-$HOME/.cargo}/bin
bindgen_ver=$(output "$cargo_bin/bindgen" --version | awk '{print $2}')
if [ "$bindgen_ver" != "$BINDGEN_VERSION" ]; then
	command -v cargo >/dev/null || die "cargo not found: needed to install bindgen-cli $BINDGEN_VERSION"
	say "installing bindgen-cli $BINDGEN_VERSION with cargo (about a minute)"
	cargo install --quiet --locked --force bindgen-cli --version "$BINDGEN_VERSION" ||
		die "cargo install bindgen-cli $BINDGEN_VERSION failed"
	did=1
fi
# cargo-fuzz, pinned, for the fuzz targets (tools/fuzz); they need the
# nightly toolchain that rustup provides on these machines.
fuzz_ver=$(output "$cargo_bin/cargo-fuzz" --version | awk '{print $2}')
if [ "$fuzz_ver" != "$CARGO_FUZZ_VERSION" ]; then
	command -v cargo >/dev/null || die "cargo not found: needed to install cargo-fuzz $CARGO_FUZZ_VERSION"
	say "installing cargo-fuzz $CARGO_FUZZ_VERSION with cargo (about a minute)"
	cargo install --quiet --locked --force cargo-fuzz --version "$CARGO_FUZZ_VERSION" ||
		die "cargo install cargo-fuzz $CARGO_FUZZ_VERSION failed"
	did=1
fi
command -v rustup >/dev/null && rustup run nightly rustc --version >/dev/null 2>&1 ||
	die "the nightly Rust toolchain (rustup) is missing: cargo fuzz needs it"
# Debian 12's QEMU 7.2, unpacked beside the system's, for the scenarios
# that check the agent's fence against it.
"$(dirname "$0")/qemu.sh" 7.2 >/dev/null
if [ -n "$did" ]; then
	say "done: QEMU $qemu_ver, rustc $rustc_ver, bindgen $BINDGEN_VERSION, cargo-fuzz $CARGO_FUZZ_VERSION"
else
	say "everything present (QEMU $qemu_ver, rustc $rustc_ver, bindgen $BINDGEN_VERSION)"
fi
exit 0
