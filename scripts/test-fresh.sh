#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# make test-fresh: the README's two commands in a clean Debian 12 root, the
# way sbuild and pbuilder catch a missing build-dependency. A machine that
# already has a package hides a missing install step; this root has only
# Debian's minbase, make, and the machine's rustup toolchain (what a new
# machine's image brings), so every other program must come from 'make deps'.
#
#   1. the bare root: mmdebstrap --variant=minbase from the machine's own
#      apt sources, cached as a tarball (never the installed root);
#   2. a clean clone of HEAD (or FRESH_REV) copied into a fresh unpack of it;
#   3. chroot with /proc, /sys, /dev (QEMU, userfaultfd, libvirtd's
#      namespaces need them) and, unless FRESH_KERNEL=cold, the cached test
#      kernel mounted at its own path;
#   4. 'make demo', then 'make test', each timed; out/fresh/result.json.
#
# Logs: out/fresh/{mmdebstrap,demo,test}.log. Fails on any non-zero rc.
# 'scripts/test-fresh.sh base' only builds (or finds) the cached bare root.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cache=${MIGLOCK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/miglock}
out=$top/out/fresh
rev=$(git -C "$top" rev-parse "${FRESH_REV:-HEAD}")
kernel_mode=${FRESH_KERNEL:-cached}
# A bare root older than this is built again (security updates move).
BASE_MAX_DAYS=7

say() { printf 'fresh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

case "${1:-}" in "" | base) ;; *) die "usage: $0 [base]" ;; esac
[ "$(id -u)" = 0 ] || die "needs root (chroot, mounts)"
case "$kernel_mode" in cached | cold) ;; *) die "FRESH_KERNEL is cached or cold, not '$kernel_mode'" ;; esac
"$top/scripts/deps.sh" fresh
[ -z "$(git -C "$top" status --porcelain --untracked-files=no)" ] ||
	say "note: uncommitted changes are not in the clean root (it runs ${rev:0:12})"
mkdir -p "$out" "$cache/fresh"
rm -f "$out/result.json"

# --- 1. the bare root ------------------------------------------------------
# The machine's apt sources, except what deps.sh adds (the root must add
# bookworm-backports itself), and its local apt settings (those no package
# owns: a snapshot mirror needs Check-Valid-Until off, say).
srcdir=$(mktemp -d)
sources=$srcdir/debian.sources
trap 'rm -rf "$srcdir"' EXIT
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
	[ -f "$f" ] || continue
	case "${f##*/}" in miglock-*) continue ;; esac
	case "$f" in
	*.sources) cat "$f" ;;
	# One-line entries become deb822, so that one file holds them all.
	*) awk '$1 == "deb" && $2 !~ /^\[/ { printf "Types: deb\nURIs: %s\nSuites: %s\nComponents:", $2, $3;
		for (i = 4; i <= NF; i++) printf " %s", $i; print "\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n" }' "$f" ;;
	esac
	echo
done | grep -v '^#' >"$sources"
grep -q '^Suites:.* bookworm\( \|$\)' "$sources" || die "no bookworm source in /etc/apt"
aptopts=()
for f in /etc/apt/apt.conf.d/*; do
	[ -f "$f" ] || continue
	dpkg-query -S "$f" >/dev/null 2>&1 || aptopts+=("--aptopt=$f")
done
key=$({
	cat "$sources"
	for o in "${aptopts[@]}"; do cat "${o#--aptopt=}"; done
	echo "minbase make"
	mmdebstrap --version
} | sha256sum | cut -c1-16)
base=$cache/fresh/bookworm-minbase-$key.tar
if [ -f "$base" ] && [ -z "$(find "$base" -mtime +"$BASE_MAX_DAYS")" ]; then
	say "using the cached bare root $base"
else
	say "building a bare Debian 12 root (mmdebstrap minbase, about 2 minutes; log: $out/mmdebstrap.log)"
	rm -f "$cache"/fresh/bookworm-minbase-*.tar
	mmdebstrap --variant=minbase --format=tar --include=make "${aptopts[@]}" bookworm "$base.part" "$sources" \
		>"$out/mmdebstrap.log" 2>&1 || { tail -n 20 "$out/mmdebstrap.log" >&2; die "mmdebstrap failed"; }
	mv "$base.part" "$base"
fi
[ "${1:-}" != base ] || { echo "$base"; exit 0; }
base_desc="debian bookworm minbase + make, mmdebstrap $(mmdebstrap --version | awk '{print $2}'), sha256:$(sha256sum "$base" | cut -c1-16), built $(date -u -r "$base" +%F)"

# --- 2. the root, with a clean clone -----------------------------------------
root=$(mktemp -d /var/tmp/miglock-fresh.XXXXXX)
mounts=()
# Unmounts in reverse order; deletes the root only once nothing is mounted
# under it (a bind of the kernel cache or /dev must never be deleted).
cleanup() {
	local i pid
	for pid in /proc/[0-9]*; do
		[ "$(readlink "$pid/root" 2>/dev/null)" = "$root" ] && kill -9 "${pid#/proc/}" 2>/dev/null
	done
	for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
		umount -R "${mounts[i]}" 2>/dev/null || umount -R -l "${mounts[i]}" 2>/dev/null || true
	done
	if findmnt -rn -o TARGET | grep -q "^$root"; then
		say "error: mounts left under $root; not deleting it"
	else
		rm -rf "$root"
	fi
	rm -rf "$srcdir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
bind() { # bind SOURCE TARGET [ro]
	mkdir -p "$2"
	mount --rbind "$1" "$2"
	# A slave: unmounting the copy's submounts must not reach the host's.
	mount --make-rslave "$2"
	mounts+=("$2")
	[ "${3:-}" != ro ] || mount -o remount,bind,ro "$2"
}

say "unpacking the bare root into $root"
# A mount point of its own: inside the chroot, / must be one for
# 'unshare --propagation private' (libvirtd's namespaces, deps-check).
mount --bind "$root" "$root"
mount --make-private "$root"
mounts+=("$root")
tar -xf "$base" -C "$root"
# The machine's network as a new machine has it: its resolver, and the
# certificate authorities it added locally (ca-certificates, which deps.sh
# installs, takes them in), without which its TLS to crates.io fails.
cp /etc/resolv.conf /etc/hosts "$root/etc/"
if [ -d /usr/local/share/ca-certificates ]; then
	mkdir -p "$root/usr/local/share/ca-certificates"
	cp -r /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
fi
say "cloning $rev into it"
git clone -q --no-hardlinks "$top" "$root/root/miglock"
git -C "$root/root/miglock" checkout -q "$rev"

# The machine's rustup toolchain, as a new machine has it: its toolchains
# read-only, its proxies in an otherwise empty ~/.cargo/bin (bindgen and
# cargo-fuzz must be installed by deps.sh again).
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
cargo_bin=${CARGO_HOME:-$HOME/.cargo}/bin
[ -d "$rustup_home/toolchains" ] || die "no rustup toolchain at $rustup_home"
bind "$rustup_home" "$root/root/.rustup" ro
mkdir -p "$root/root/.cargo/bin"
cp "$cargo_bin/rustup" "$root/root/.cargo/bin/"
for p in cargo rustc rustdoc rustfmt cargo-fmt cargo-clippy clippy-driver; do
	ln "$root/root/.cargo/bin/rustup" "$root/root/.cargo/bin/$p"
done
[ ! -f "${CARGO_HOME:-$HOME/.cargo}/config.toml" ] || cp "${CARGO_HOME:-$HOME/.cargo}/config.toml" "$root/root/.cargo/"

mount -t proc proc "$root/proc" && mounts+=("$root/proc")
bind /sys "$root/sys"
bind /dev "$root/dev"
mount -t tmpfs tmpfs "$root/tmp" && mounts+=("$root/tmp")
mount -t tmpfs tmpfs "$root/run" && mounts+=("$root/run")
kernel=cold
if [ "$kernel_mode" = cached ]; then
	# The newest built one only: kernel.sh keeps two and prunes the rest,
	# which must never reach a bound host tree.
	k=$(ls -1dt "$cache"/linux-*/.miglock-built 2>/dev/null | head -n1 || true)
	if [ -n "$k" ]; then
		k=${k%/.miglock-built}
		# Same path inside: kbuild recorded absolute paths. HOME is /root in both.
		case "$k" in /root/*) ;; *) die "the kernel cache $k is not under /root: use FRESH_KERNEL=cold" ;; esac
		bind "$k" "$root$k"
		kernel="cached $k"
	fi
fi
say "test kernel: $kernel"

# --- 3. the README's commands -------------------------------------------------
# The environment: a new login's, plus the machine's own network settings
# (proxies, certificate bundles, registry settings) as CI has them.
passenv=()
while IFS='=' read -r name _; do
	case "$name" in
	http_proxy | https_proxy | no_proxy | HTTP_PROXY | HTTPS_PROXY | NO_PROXY | SSL_CERT_FILE | SSL_CERT_DIR | \
		CURL_CA_BUNDLE | GIT_SSL_CAINFO | CARGO_HTTP_* | CARGO_NET_* | CARGO_REGISTRIES_* | CARGO_REGISTRY_*)
		passenv+=("$name=${!name}") ;;
	esac
done < <(env)
in_root() {
	chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 RUSTUP_AUTO_INSTALL=0 "${passenv[@]}" \
		PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		DEPS_CHECK_MISSING=/root/miglock/out/deps-missing.txt \
		/bin/bash -c "cd /root/miglock && $1"
}
# run NAME COMMAND: timed, its output in out/fresh/NAME.log and on stderr
# (prefixed), its rc and seconds in NAME_rc and NAME_s.
run() {
	local name=$1 t0=$SECONDS rc
	say "running '$2' in the clean root (log: $out/$name.log)"
	# In the background with a wait: a TERM or INT then runs the cleanup at
	# once (bash defers traps until a foreground pipeline ends).
	rm -f "$out/$name.rc"
	{ in_root "$2"; echo $? >"$out/$name.rc"; } 2>&1 | tee "$out/$name.log" | sed -u "s/^/  $name| /" >&2 &
	wait $! || true
	rc=$(cat "$out/$name.rc" 2>/dev/null || echo 1)
	printf -v "${name}_rc" %d "$rc"
	printf -v "${name}_s" %d $((SECONDS - t0))
	say "'$2' ended with rc $rc after $((SECONDS - t0)) s"
}
run demo "make demo"
run test "make test"

summary=$(grep -E '^summary: [0-9]+ passed, [0-9]+ failed' "$out/test.log" | tail -n1 || true)
missing=$({
	cat "$root/root/miglock/out/deps-missing.txt" 2>/dev/null || true
	# bash's and dash's words for a program that is not there.
	grep -ohE '(line [0-9]+|^[a-z/]*sh: [0-9]+): [^ :]+: (command )?not found' "$out/demo.log" "$out/test.log" |
		sed -E 's/.*: ([^ :]+): (command )?not found/\1/' || true
} | sort -u)
jq -n --arg base "$base_desc" --arg commit "$rev" --arg kernel "$kernel" \
	--argjson demo_rc "$demo_rc" --argjson test_rc "$test_rc" --arg summary "$summary" \
	--argjson demo_s "$demo_s" --argjson test_s "$test_s" \
	--argjson missing "$(printf '%s\n' "$missing" | jq -R . | jq -s 'map(select(. != ""))')" \
	'{base: $base, commit: $commit, kernel: $kernel, demo_rc: $demo_rc, test_rc: $test_rc,
	  summary: $summary, demo_s: $demo_s, test_s: $test_s, missing_commands: $missing}' >"$out/result.json"
cat "$out/result.json" >&2
[ "$demo_rc" = 0 ] && [ "$test_rc" = 0 ] && [ -n "$summary" ] && [ -z "$missing" ] ||
	die "the clean root failed (logs: $out/demo.log, $out/test.log)"
say "passed: make demo in $demo_s s, make test in $test_s s ($summary)"
