#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Inspects the packages "make deb" built in out/deb/: their files and modes,
# conffiles, maintainer scripts, units (systemd-analyze verify), the default
# configuration (parsed by the packaged miglockd), the man pages, and the
# DKMS tree (its build script's refusals, and a real module build against
# the test kernel). Unpacks into a temporary root with dpkg -x; installs
# nothing. Ends with "packages: N passed, N failed".
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
debs=$top/out/deb
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
. "$top/tests/checks.sh"

deb() { ls "$debs/$1"_*.deb 2>/dev/null | head -n1; }

# has_files PACKAGE MODE:PATH...: the package holds each PATH with MODE.
has_files() {
	local pkg=$1 listing want mode path bad=0
	shift
	listing=$(dpkg-deb -c "$(deb "$pkg")") || return 1
	for want in "$@"; do
		mode=${want%%:*} path=${want#*:}
		if ! awk -v m="$mode" -v p="./$path" '$1 == m && $6 == p && $2 == "root/root" { f = 1 } END { exit !f }' <<<"$listing"; then
			echo "$pkg: no $path with mode $mode owned by root: $(grep -F " ./$path" <<<"$listing" || echo absent)"
			bad=1
		fi
	done
	return $bad
}

# ctrl PACKAGE FILE: a control file of the package (conffiles, postinst...).
ctrl() { dpkg-deb --ctrl-tarfile "$(deb "$1")" | tar -xO "./$2" 2>/dev/null; }

all_three() { for p in miglockd miglock-guest-tools miglock-dkms; do [ -n "$(deb $p)" ] || { echo "no $p package in $debs"; return 1; }; done; }
check "three packages in out/deb" all_three
for p in miglockd miglock-guest-tools miglock-dkms; do dpkg -x "$(deb $p)" "$root" || exit 1; done

check "miglockd: programs, units, configuration, logrotate, man pages" has_files miglockd \
	-rwxr-xr-x:usr/sbin/miglockd -rwxr-xr-x:usr/bin/miglockctl \
	-rwxr-xr-x:usr/libexec/miglock/miglock-libvirt-hook \
	-rw-r--r--:lib/systemd/system/miglockd.service -rw-r--r--:usr/lib/tmpfiles.d/miglockd.conf \
	-rw-r--r--:etc/miglock/miglockd.toml -rw-r--r--:etc/miglock/libvirt-hook.toml \
	-rw-r--r--:etc/logrotate.d/miglockd \
	-rw-r--r--:usr/share/man/man8/miglockd.8.gz -rw-r--r--:usr/share/man/man1/miglockctl.1.gz \
	-rw-r--r--:usr/share/man/man1/miglockctl-migrate.1.gz \
	-rw-r--r--:usr/share/man/man8/miglock-libvirt-hook.8.gz \
	-rw-r--r--:usr/share/bash-completion/completions/miglockctl \
	-rw-r--r--:usr/share/zsh/vendor-completions/_miglockctl \
	-rw-r--r--:usr/share/fish/vendor_completions.d/miglockctl.fish
check "miglock-guest-tools: programs, header, tracer unit, man pages" has_files miglock-guest-tools \
	-rwxr-xr-x:usr/bin/miglock -rwxr-xr-x:usr/bin/set_migration_flag \
	-rwxr-xr-x:usr/sbin/miglock-tracer -rw-r--r--:usr/include/linux/miglock.h \
	-rw-r--r--:lib/systemd/system/miglock-tracer.service \
	-rw-r--r--:usr/share/man/man1/miglock.1.gz -rw-r--r--:usr/share/man/man1/set_migration_flag.1.gz \
	-rw-r--r--:usr/share/man/man8/miglock-tracer.8.gz
version=$(dpkg-deb -f "$(deb miglock-dkms)" Version)
src=usr/src/miglock-${version%-*}
check "miglock-dkms: dkms.conf, build script, module source, examples" has_files miglock-dkms \
	-rw-r--r--:$src/dkms.conf -rwxr-xr-x:$src/dkms-build.sh -rw-r--r--:$src/Kbuild \
	-rw-r--r--:$src/rust/Kbuild -rw-r--r--:$src/rust/miglock.rs \
	-rw-r--r--:$src/tools/miglock-abi/src/wire.rs -rw-r--r--:$src/tools/miglock-lockstate/src/table.rs \
	-rw-r--r--:usr/share/doc/miglock-dkms/examples/modules-load.d-miglock.conf \
	-rw-r--r--:usr/share/doc/miglock-dkms/examples/modprobe.d-miglock.conf

conffiles() {
	local got
	got=$(ctrl miglockd conffiles | sort)
	[ "$got" = "$(printf '%s\n' /etc/logrotate.d/miglockd /etc/miglock/libvirt-hook.toml /etc/miglock/miglockd.toml)" ] ||
		{ echo "conffiles: $got"; return 1; }
	! ctrl miglock-guest-tools conffiles | grep -q . || { echo "guest tools have conffiles"; return 1; }
}
check "conffiles: the configuration, the hook's and logrotate's" conffiles

no_hooks() { [ ! -e "$root/etc/libvirt" ] || { find "$root/etc/libvirt"; return 1; }; }
check "no package writes into /etc/libvirt" no_hooks

postinst() {
	local agent tracer
	agent=$(ctrl miglockd postinst) tracer=$(ctrl miglock-guest-tools postinst)
	grep -q "deb-systemd-helper enable 'miglockd.service'" <<<"$agent" || { echo "miglockd.service not enabled"; return 1; }
	grep -q "deb-systemd-invoke .* 'miglockd.service'" <<<"$agent" || { echo "miglockd.service not started"; return 1; }
	grep -q "systemd-tmpfiles .*--create miglockd.conf" <<<"$agent" || { echo "tmpfiles not applied"; return 1; }
	# --no-enable: enabled again only where the administrator had enabled it.
	grep -q "deb-systemd-helper debian-installed 'miglock-tracer.service'" <<<"$tracer" || { echo "tracer: $tracer"; return 1; }
	! grep -q "deb-systemd-invoke" <<<"$tracer" || { echo "tracer started"; return 1; }
	ctrl miglock-dkms postinst | grep -q "dkms" || { echo "no dkms in miglock-dkms postinst"; return 1; }
	grep -qx "PACKAGE_VERSION=\"${version%-*}\"" "$root/$src/dkms.conf" || { echo "dkms.conf version"; return 1; }
}
check "maintainer scripts: agent enabled, tmpfiles applied, tracer not enabled, dkms registered" postinst

miglockd=$root/usr/sbin/miglockd
conf=$root/etc/miglock/miglockd.toml
check "the default configuration parses (packaged miglockd --check-config)" \
	"$miglockd" --check-config --config "$conf"
# Every "#key = value" and "#[table]" line the file shows must be real.
uncommented() {
	sed -E 's/^#(\[|[a-z_]+ =)/\1/' "$conf" >"$root/all.toml"
	grep -q '^\[\[vm\]\]' "$root/all.toml" || { echo "nothing uncommented"; return 1; }
	"$miglockd" --check-config --config "$root/all.toml"
}
check "the configuration's commented defaults and example parse too" uncommented
# The hook with its packaged configuration beside it: a miglock VM of
# unknown state is refused for that, not for an unreadable configuration.
hook_conf() {
	local d=$root/hook out
	mkdir -p "$d"
	cp "$root/usr/libexec/miglock/miglock-libvirt-hook" "$d/qemu"
	cp "$root/etc/miglock/libvirt-hook.toml" "$d/miglock.toml"
	out=$(echo "<domain><x value='socket,id=miglock-bell'/></domain>" | "$d/qemu" d migrate begin - 2>&1) &&
		{ echo "allowed: $out"; return 1; }
	grep -q "lock state is unknown" <<<"$out" && ! grep -q "configuration" <<<"$out" || { echo "$out"; return 1; }
}
check "the hook's default configuration parses" hook_conf

units() {
	local u dir=$root/verify
	mkdir -p "$dir"
	for u in miglockd.service miglock-tracer.service; do
		# The programs are in the unpacked root, not installed here.
		sed "s|=/usr/sbin/|=$root/usr/sbin/|" "$root/lib/systemd/system/$u" >"$dir/$u"
		grep -q "^ExecStart=$root/usr/sbin/" "$dir/$u" || { echo "$u: no packaged ExecStart"; return 1; }
	done
	if systemd-analyze --version >/dev/null 2>&1; then
		systemd-analyze verify --man=no "$dir/miglockd.service" "$dir/miglock-tracer.service"
	else
		echo "no systemd-analyze here: only checked the units' sections and keys" >&2
		for u in "$dir"/*.service; do
			grep -q '^\[Unit\]' "$u" && grep -q '^\[Service\]' "$u" && grep -q '^\[Install\]' "$u" || return 1
		done
	fi
	grep -qx 'Type=notify' "$dir/miglockd.service" || { echo "miglockd.service is not Type=notify"; return 1; }
}
check "units: systemd-analyze verify" units

manpages() {
	local page
	for page in man8/miglockd.8 man1/miglockctl.1 man1/miglock.1 man1/set_migration_flag.1 man8/miglock-tracer.8 man8/miglock-libvirt-hook.8; do
		MANWIDTH=80 man -l "$root/usr/share/man/$page.gz" 2>&1 | grep -q '^NAME' || { echo "$page does not render"; return 1; }
	done
	MANWIDTH=200 man -l "$root/usr/share/man/man1/miglockctl.1.gz" 2>/dev/null | grep -q 'EXIT STATUS' ||
		{ echo "miglockctl(1) has no EXIT STATUS"; return 1; }
}
check "man pages render, miglockctl's with its exit status" manpages

# The module's #[path] includes resolve inside the DKMS tree.
paths() {
	local f p bad=0
	for f in "$root/$src"/rust/*.rs "$root/$src"/rust/compat/*.rs; do
		while read -r p; do
			[ -f "$(dirname "$f")/$p" ] || { echo "$f: $p missing"; bad=1; }
		done < <(sed -n 's/^#\[path = "\(.*\)"\]/\1/p' "$f")
	done
	return $bad
}
check "DKMS tree: every #[path] include resolves" paths

# dkms-build.sh against fake kernels: each missing piece is named.
refuses() {
	local k=$root/fakekernel want=$1 out
	shift
	rm -rf "$k"
	mkdir -p "$k/rust"
	printf '%s\n' "$@" >"$k/.config"
	[ "$want" = libkernel.rmeta ] || touch "$k/rust/libkernel.rmeta" "$k/rust/libmacros.so"
	if out=$(cd "$root/$src" && sh ./dkms-build.sh "$k" 2>&1); then
		echo "built for a kernel without $want"
		return 1
	fi
	grep -qF -- "$want" <<<"$out" || { echo "did not name $want: $out"; return 1; }
}
check "dkms-build.sh: a kernel without CONFIG_RUST is named" refuses CONFIG_RUST '# CONFIG_RUST is not set'
check "dkms-build.sh: headers without Rust metadata are named" refuses libkernel.rmeta CONFIG_RUST=y
check "dkms-build.sh: a kernel built by another rustc is named" refuses 'rustc 0.0.1' CONFIG_RUST=y \
	'CONFIG_RUSTC_VERSION_TEXT="rustc 0.0.1 (0 1970-01-01)"'

# The real thing: the unpacked DKMS tree builds against the test kernel.
kdir=$("$top/scripts/kernel.sh" kdir 2>/dev/null)
builds() {
	[ -f "$kdir/rust/libkernel.rmeta" ] || { echo "no test kernel at $kdir: run 'make kernel'"; return 1; }
	local b=$root/build
	cp -r "$root/$src" "$b"
	(cd "$b" && sh ./dkms-build.sh "$kdir") >"$root/build.log" 2>&1 || { tail -n 15 "$root/build.log"; return 1; }
	modinfo "$b/rust/miglock.ko" | grep -q '^name: *miglock' || { echo "no miglock.ko"; return 1; }
}
check "DKMS tree: miglock.ko builds against the test kernel" builds

finish packages
