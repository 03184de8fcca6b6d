#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Builds the Debian packages miglockd, miglock-guest-tools and miglock-dkms
# into out/deb/ from the release binaries "make tools" built (nothing is
# compiled here): stages packaging/debian with the binaries, generated man
# pages and completions (xtask docs), configuration and the module's source,
# then runs dpkg-buildpackage on the staged tree. Log: out/deb/build.log.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
rel=$top/tools/target/release
out=$top/out/deb
say() { printf 'deb: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$top/tools/Cargo.toml" | head -n1)
[ -n "$version" ] || die "no workspace version in tools/Cargo.toml"
bins=(miglockd miglockctl miglock-libvirt-hook miglock set_migration_flag miglock-tracer)
for b in "${bins[@]}" xtask; do
	[ -x "$rel/$b" ] || die "$rel/$b is missing: run 'make tools'"
done
command -v dpkg-buildpackage >/dev/null || die "dpkg-buildpackage is missing: run 'make deps'"

stage=$out/build/miglock-$version
rm -rf "$out"
mkdir -p "$stage"/{bin,doc,etc/miglock,include,dkms-src/tools/miglock-abi,dkms-src/tools/miglock-lockstate}
cp -r "$top/packaging/debian" "$stage/debian"
cp -r "$top/packaging/examples" "$stage/examples"
for b in "${bins[@]}"; do cp "$rel/$b" "$stage/bin/"; done
"$rel/xtask" docs "$stage/docs"
cp "$top/packaging/miglockd.toml" "$top/packaging/libvirt-hook.toml" "$stage/etc/miglock/"
cp "$top/include/uapi/linux/miglock.h" "$stage/include/"
cp "$top/Documentation/"{host-agent,admin-guide,tracer}.rst "$top/tools/libvirt/domain.xml" "$stage/doc/"

# debhelper's names for the units, tmpfiles, logrotate and DKMS files.
d=$stage/debian
cp "$top/packaging/miglockd.service" "$top/packaging/miglockd.tmpfiles" \
	"$top/packaging/miglockd.logrotate" "$d/"
cp "$top/packaging/miglock-tracer.service" "$d/miglock-guest-tools.miglock-tracer.service"
cp "$top/packaging/dkms/dkms.conf" "$d/miglock-dkms.dkms"

# The module's source as the repository lays it out: rust/abi.rs and
# rust/lockstate.rs include the shared crates by #[path = "../tools/..."].
src=$stage/dkms-src
cp "$top/Kbuild" "$top/packaging/dkms/dkms-build.sh" "$src/"
mkdir -p "$src/rust/compat"
cp "$top/rust/Kbuild" "$top/rust/Kconfig" "$top/rust/"*.rs "$src/rust/"
cp "$top/rust/compat/"*.rs "$top/rust/compat/"*.h "$src/rust/compat/"
# Generated at build time, not source.
rm -f "$src/rust/bindings_generated.rs"
cp -r "$top/tools/miglock-abi/src" "$src/tools/miglock-abi/"
cp -r "$top/tools/miglock-lockstate/src" "$src/tools/miglock-lockstate/"
echo "dkms-src/* usr/src/miglock-$version" >"$d/miglock-dkms.install"

# The changelog names this tree's commit; its date makes builds repeatable.
when=$(git -C "$top" log -1 --format=%ct 2>/dev/null || date +%s)
commit=$(git -C "$top" describe --always --dirty 2>/dev/null || echo unknown)
cat >"$d/changelog" <<EOC
miglock ($version-1) unstable; urgency=medium

  * Built from commit $commit.

 -- miglock developers <devel@miglock.invalid>  $(date -R -u -d "@$when")
EOC

say "building miglock $version packages (log: $out/build.log)"
(cd "$stage" && SOURCE_DATE_EPOCH=$when dpkg-buildpackage -b -uc -us) >"$out/build.log" 2>&1 ||
	{ tail -n 30 "$out/build.log" >&2; die "dpkg-buildpackage failed"; }
mv "$out/build/"*.deb "$out/"
ls "$out/"*.deb
