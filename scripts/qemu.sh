#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Keeps Debian 12's own QEMU (7.2) beside the system's QEMU (10.0 from
# bookworm-backports, which 'make deps' installs), so that the harness can
# run guests on either: the packages are unpacked under the cache, never
# installed, and a wrapper points QEMU at its own modules and firmware.
#
#   scripts/qemu.sh 7.2      unpack it unless cached; print the wrapper's path
#   scripts/qemu.sh system   print the system QEMU's path
#
# Then: miglock-harness --qemu "$(scripts/qemu.sh 7.2)" run NAME...
set -euo pipefail

cache=${MIGLOCK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/miglock}

say() { printf 'qemu: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

case "${1:-}" in
system)
	command -v qemu-system-x86_64 || die "qemu-system-x86_64 not found (run 'make deps')"
	exit 0
	;;
7.2) ;;
*) die "usage: $0 7.2|system" ;;
esac

# The newest 7.2 build bookworm offers (security updates move it).
version=$(apt-cache madison qemu-system-x86 2>/dev/null |
	awk -F'|' '$2 ~ /1:7\.2/ { gsub(/ /, "", $2); print $2 }' | sort -V | tail -n1)
[ -n "$version" ] || die "no QEMU 7.2 among the known packages (apt-get update?)"
dir=$cache/qemu-$(echo "$version" | tr ':~+' '___')
wrapper=$dir/qemu-system-x86_64
if [ -x "$wrapper" ]; then
	echo "$wrapper"
	exit 0
fi

say "unpacking QEMU $version into $dir"
rm -rf "$dir"
mkdir -p "$dir/debs" "$dir/root"
data_version=$(apt-cache madison qemu-system-data |
	awk -F'|' -v v="${version%+b*}" '{ gsub(/ /, "", $2) } $2 == v { print $2; exit }')
seabios_version=$(apt-cache madison seabios |
	awk -F'|' '$3 ~ /bookworm\// && $3 !~ /backports/ { gsub(/ /, "", $2); print $2; exit }')
(
	cd "$dir/debs"
	# apt's download user cannot write into root's cache: fetch as root.
	apt-get download -q -o APT::Sandbox::User=root \
		"qemu-system-x86=$version" "qemu-system-common=$version" \
		"qemu-system-data=${data_version:-$version}" "seabios=$seabios_version" >/dev/null
) || die "apt-get download of QEMU $version failed"
for deb in "$dir"/debs/*.deb; do
	dpkg-deb -x "$deb" "$dir/root"
done
missing=$(ldd "$dir/root/usr/bin/qemu-system-x86_64" \
	"$dir/root/usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so" | awk '/not found/ { print $1 }' | sort -u)
[ -z "$missing" ] || die "QEMU $version needs libraries this machine lacks: $missing"

cat >"$wrapper" <<EOF
#!/bin/sh
# QEMU $version unpacked by scripts/qemu.sh: its own modules (TCG is one)
# and firmware, not the system QEMU's.
export QEMU_MODULE_DIR=$dir/root/usr/lib/x86_64-linux-gnu/qemu
exec $dir/root/usr/bin/qemu-system-x86_64 -L $dir/root/usr/share/qemu -L $dir/root/usr/share/seabios "\$@"
EOF
chmod 755 "$wrapper"
"$wrapper" --version | head -n1 >&2
echo "$wrapper"
