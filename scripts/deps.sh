#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Install (as root) and check everything the build and the tests need.
# Idempotent and silent when everything is present; names what is missing
# or too old otherwise.
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
	bc flex bison libelf-dev libssl-dev cpio xz-utils lz4 make gcc libc6-dev
	libvirt-daemon-driver-qemu libvirt-daemon libvirt-clients
	debhelper dh-dkms dpkg-dev systemd man-db procps
)
# From bookworm-backports (Debian 13's versions): QEMU 10.0. Debian 12's
# QEMU 7.2 loses dirty pages under TCG, so a migration test passing on it
# proves little (Documentation/testing.rst, "Which QEMU").
BACKPORTS=bookworm-backports
BACKPORTS_PKGS=(qemu-system-x86 qemu-guest-agent)
QEMU_MIN=10.0

say() { printf 'deps: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

missing=()
for p in "${DEB_PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
	[ "$(id -u)" = 0 ] ||
		die "missing Debian packages: ${missing[*]} (run 'make deps' as root)"
	say "installing Debian packages: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >/dev/null
	apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null ||
		die "apt-get install failed for: ${missing[*]}"
fi

# Version checks: fail with what was found, not with a kbuild error later.
ver_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

# bookworm-backports, from the same mirror as bookworm itself.
backports_known() { apt-cache policy 2>/dev/null | grep -q " $BACKPORTS/main"; }
add_backports() {
	local uri
	uri=$(awk '/^URIs:/ { u = $2 } /^Suites:/ && / bookworm( |$)/ { print u; exit }' \
		/etc/apt/sources.list.d/*.sources 2>/dev/null)
	[ -n "$uri" ] || uri=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' \
		/etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null)
	[ -n "$uri" ] || die "no bookworm source in /etc/apt to add $BACKPORTS beside"
	say "adding $BACKPORTS (from the mirror bookworm comes from)"
	printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: %s\n' \
		"$uri" "$BACKPORTS" /usr/share/keyrings/debian-archive-keyring.gpg \
		>"/etc/apt/sources.list.d/miglock-$BACKPORTS.sources"
	apt-get update -q >/dev/null
}
qemu_ver=$(qemu-system-x86_64 --version 2>/dev/null | awk '/version/ { print $4; exit }')
missing=()
for p in "${BACKPORTS_PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ] || ! ver_ge "${qemu_ver:-0}" "$QEMU_MIN"; then
	[ "$(id -u)" = 0 ] ||
		die "QEMU ${qemu_ver:-none} found, need >= $QEMU_MIN from $BACKPORTS (run 'make deps' as root)"
	backports_known || add_backports
	say "installing from $BACKPORTS: ${BACKPORTS_PKGS[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# No recommends: they would move mesa and libdrm too.
	apt-get install -y -q --no-install-recommends -t "$BACKPORTS" "${BACKPORTS_PKGS[@]}" >/dev/null ||
		die "apt-get install -t $BACKPORTS failed for: ${BACKPORTS_PKGS[*]}"
	qemu_ver=$(qemu-system-x86_64 --version 2>/dev/null | awk '/version/ { print $4; exit }')
fi
ver_ge "${qemu_ver:-0}" "$QEMU_MIN" || die "qemu-system-x86_64 is ${qemu_ver:-missing}; need >= $QEMU_MIN"

rustc_ver=$(/usr/bin/rustc --version 2>/dev/null | awk '{print $2}')
[ -n "$rustc_ver" ] || die "/usr/bin/rustc (Debian rustc-web) does not run"
ver_ge "$rustc_ver" "$RUSTC_MIN" || die "/usr/bin/rustc is $rustc_ver; need >= $RUSTC_MIN"
[ -d "$(/usr/bin/rustc --print sysroot)/lib/rustlib/src/rust/library/core" ] ||
	die "Rust library sources missing (package rust-web-src)"
clippy_ver=$(/usr/bin/clippy-driver --rustc --version 2>/dev/null | awk '{print $2}')
[ "$clippy_ver" = "$rustc_ver" ] ||
	die "/usr/bin/clippy-driver is '$clippy_ver', rustc is $rustc_ver: install matching rust-web-clippy"
command -v clang-$LLVM_MAJOR >/dev/null || die "clang-$LLVM_MAJOR not found"
dh_ver=$(dpkg-query -W -f='${Version}' debhelper 2>/dev/null)
ver_ge "${dh_ver:-0}" "$DEBHELPER_MIN" || die "debhelper is ${dh_ver:-missing}; make deb needs >= $DEBHELPER_MIN"
command -v systemd-analyze >/dev/null || die "systemd-analyze not found (package systemd): tests/packages.sh verifies the units with it"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found"
[ -x /bin/busybox ] || die "/bin/busybox (busybox-static) not found"
ls /usr/src/linux-source-6.12.tar.* >/dev/null 2>&1 ||
	die "/usr/src/linux-source-6.12.tar.* not found (package linux-source-6.12)"

# bindgen, pinned: the kernel's generated bindings depend on its version.
cargo_bin=${CARGO_HOME:-$HOME/.cargo}/bin
bindgen_ver=$("$cargo_bin/bindgen" --version 2>/dev/null | awk '{print $2}' || true)
if [ "$bindgen_ver" != "$BINDGEN_VERSION" ]; then
	command -v cargo >/dev/null || die "cargo not found: needed to install bindgen-cli $BINDGEN_VERSION"
	say "installing bindgen-cli $BINDGEN_VERSION with cargo (about a minute)"
	cargo install --quiet --locked --force bindgen-cli --version "$BINDGEN_VERSION" ||
		die "cargo install bindgen-cli $BINDGEN_VERSION failed"
fi
# cargo-fuzz, pinned, for the fuzz targets (tools/fuzz); they need the
# nightly toolchain that rustup provides on these machines.
fuzz_ver=$("$cargo_bin/cargo-fuzz" --version 2>/dev/null | awk '{print $2}' || true)
if [ "$fuzz_ver" != "$CARGO_FUZZ_VERSION" ]; then
	say "installing cargo-fuzz $CARGO_FUZZ_VERSION with cargo (about a minute)"
	cargo install --quiet --locked --force cargo-fuzz --version "$CARGO_FUZZ_VERSION" ||
		die "cargo install cargo-fuzz $CARGO_FUZZ_VERSION failed"
fi
rustup run nightly rustc --version >/dev/null 2>&1 ||
	die "the nightly Rust toolchain (rustup) is missing: cargo fuzz needs it"
# Debian 12's QEMU 7.2, unpacked beside the system's, for the scenarios
# that check the agent's fence against it.
"$(dirname "$0")/qemu.sh" 7.2 >/dev/null
exit 0
