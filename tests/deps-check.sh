#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Guards against a missing install step, which a machine that already has
# the package hides (CI runs on such a machine):
#  1. scripts/deps.sh on a stubbed machine that has nothing (no QEMU, no
#     packages; dpkg-query, apt-get and apt-cache stubbed, /etc/apt private):
#     it must go on to install, in order, and say why when it stops;
#  2. every external command that the host-side scripts and the Rust tests
#     call must come from a package deps.sh installs (or one of those
#     pulls in), from Debian's essential base, or be checked by deps.sh.
# 'make test-fresh' is the full check in a clean root; this one is cheap
# enough for every run. Ends with "deps-check: N passed, N failed".
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
deps=${DEPS_SH:-$top/scripts/deps.sh}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$top/tests/checks.sh"

# --- 1. deps.sh on an empty machine ------------------------------------

# The stub machine: a bin directory with only the base tools deps.sh may
# use before it installs anything, plus stubs of the package tools that
# record what they were asked and keep a fake dpkg database.
base_tools=(bash sh env awk mawk grep sed sort head tail cat printf dirname mkdir ls tr cut
	wc rm mv cp touch tee sha256sum date uname)
make_machine() {
	local m=$1 t
	mkdir -p "$m/bin" "$m/apt/sources.list.d" "$m/home"
	for t in "${base_tools[@]}"; do
		[ -x "/usr/bin/$t" ] && ln -sf "/usr/bin/$t" "$m/bin/$t"
		[ -x "/bin/$t" ] && [ ! -e "$m/bin/$t" ] && ln -sf "/bin/$t" "$m/bin/$t"
	done
	: >"$m/dpkg.db"
	: >"$m/calls"
	printf 'Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\nComponents: main\n' \
		>"$m/apt/sources.list.d/debian.sources"
	cat >"$m/bin/id" <<EOF
#!/bin/sh
echo "\${STUB_UID:-0}"
EOF
	# dpkg-query -W -f=FORMAT PKG: installed only once the stub apt-get
	# installed it; a version for the debhelper check.
	cat >"$m/bin/dpkg-query" <<EOF
#!/bin/sh
for p; do :; done
grep -qx "\$p" "$m/dpkg.db" || exit 1
case "\$2" in *Status*) printf 'install ok installed' ;; *) printf '13.11.4' ;; esac
EOF
	cat >"$m/bin/apt-get" <<EOF
#!/bin/sh
echo "apt-get \$*" >>"$m/calls"
[ -z "\${STUB_APT_FAIL:-}" ] || case " \$* " in *" \$STUB_APT_FAIL "*) echo "E: stub failure" >&2; exit 100 ;; esac
case " \$* " in
*" install "*)
	for a; do
		case "\$a" in -*|install|bookworm-backports) ;; *) echo "\${a%%=*}" >>"$m/dpkg.db" ;; esac
	done
	case " \$* " in *" qemu-system-x86 "*)
		printf '#!/bin/sh\necho "QEMU emulator version 10.0.2 (stub)"\n' >"$m/bin/qemu-system-x86_64"
		/bin/chmod +x "$m/bin/qemu-system-x86_64" ;;
	esac ;;
esac
exit 0
EOF
	# apt-cache policy: bookworm-backports is known once its source exists.
	cat >"$m/bin/apt-cache" <<EOF
#!/bin/sh
echo "apt-cache \$*" >>"$m/calls"
ls /etc/apt/sources.list.d/ | grep -q backports &&
	echo " 100 http://mirror.invalid/debian bookworm-backports/main amd64 Packages"
exit 0
EOF
	chmod +x "$m"/bin/id "$m"/bin/dpkg-query "$m"/bin/apt-get "$m"/bin/apt-cache
}

# run_deps MACHINE: deps.sh with only the machine's commands, its own
# /etc/apt/sources.list.d (private mount) and an empty home.
run_deps() {
	local m=$1
	unshare --mount --propagation private /bin/sh -c '
		mount --bind "$1/apt/sources.list.d" /etc/apt/sources.list.d || exit 99
		shift; exec "$@"' sh "$m" \
		env -i PATH="$m/bin" HOME="$m/home" MIGLOCK_CACHE="$m/cache" \
		STUB_UID="${STUB_UID:-0}" STUB_APT_FAIL="${STUB_APT_FAIL:-}" \
		bash "$deps" >"$m/out" 2>&1
	echo $? >"$m/rc"
}

# The packages of one of deps.sh's lists (NAME=( ... )).
listed() {
	awk -v n="$1" -v llvm="$(sed -n 's/^LLVM_MAJOR=//p' "$deps")" '
		$0 ~ "^" n "=\\(" { on = 1; sub(/^[A-Z_]+=\(/, "") }
		on { sub(/#.*/, ""); if (sub(/\).*/, "")) on = 0; gsub(/\$LLVM_MAJOR/, llvm); print }' "$deps" |
		tr -s ' \t' '\n\n' | grep -v '^$'
}

empty_machine_installs() {
	local m=$work/empty rc pkg
	make_machine "$m"
	run_deps "$m"
	rc=$(cat "$m/rc")
	cat "$m/out"
	[ "$rc" != 127 ] || { echo "deps.sh died with 127 (a command not found)"; return 1; }
	# The Debian packages, every one, after an update...
	grep -qx 'apt-get update -q' "$m/calls" || { echo "no apt-get update"; return 1; }
	for pkg in $(listed DEB_PKGS); do
		grep -q "^apt-get install .* $pkg\( \|$\)" "$m/calls" || { echo "never installed $pkg"; return 1; }
	done
	# ...then QEMU from bookworm-backports, whose source was added beside
	# bookworm's from the same mirror.
	grep -q '^apt-get install .*-t bookworm-backports qemu-system-x86 qemu-guest-agent' "$m/calls" ||
		{ echo "QEMU not installed from bookworm-backports"; cat "$m/calls"; return 1; }
	grep -qx 'URIs: http://mirror.invalid/debian' "$m"/apt/sources.list.d/miglock-bookworm-backports.sources ||
		{ echo "no backports source from the machine's mirror"; return 1; }
	[ "$(grep -n '^apt-get update' "$m/calls" | sed -n 2p | cut -d: -f1)" -lt \
		"$(grep -n 'bookworm-backports qemu' "$m/calls" | cut -d: -f1)" ] ||
		{ echo "no apt-get update between adding backports and installing from it"; return 1; }
	# The stub machine has no rustc: deps.sh must stop there, saying so.
	[ "$rc" = 1 ] && tail -n1 "$m/out" | grep -q '^deps: error: ' ||
		{ echo "deps.sh ended with rc $rc without an error line"; return 1; }
}
check "deps.sh on a machine with nothing: installs the packages, then QEMU from backports, then says what stops it" \
	empty_machine_installs

second_run_installs_nothing() {
	local m=$work/empty
	: >"$m/calls"
	run_deps "$m"
	cat "$m/out"
	! grep -q '^apt-get install' "$m/calls" || { echo "installed again:"; cat "$m/calls"; return 1; }
	[ "$(cat "$m/rc")" != 127 ]
}
check "deps.sh a second time: nothing installed again" second_run_installs_nothing

update_fails_loudly() {
	local m=$work/noupdate
	make_machine "$m"
	STUB_APT_FAIL=update run_deps "$m"
	cat "$m/out"
	[ "$(cat "$m/rc")" = 1 ] && grep -q '^deps: error: apt-get update failed' "$m/out"
}
check "deps.sh: a failing apt-get update is named, not silent" update_fails_loudly

not_root_is_told() {
	local m=$work/user
	make_machine "$m"
	STUB_UID=1000 run_deps "$m"
	cat "$m/out"
	[ "$(cat "$m/rc")" = 1 ] && grep -q "^deps: error: missing Debian packages: .*kmod.*as root" "$m/out" &&
		! grep -q '^apt-get install' "$m/calls"
}
check "deps.sh as a non-root user: names the missing packages, installs nothing" not_root_is_told

# --- 2. every command the scripts call has an install step ---------------

# Host-side shell: the scripts, the test runners, CI's entry and the DKMS
# build the package check runs. (tests/guest and tests/scenarios run in the
# guest's busybox, built into its initramfs.)
shell_files=("$top"/scripts/*.sh "$top"/tests/*.sh "$top/.ci/run" "$top"/packaging/dkms/*.sh)
rust_dirs=("$top/tests/harness/src" "$top"/tools/*/src "$top"/tools/*/tests)

# Commands the code runs through a variable with a default.
indirect=(cc cargo)
# Probes whose absence is a normal answer: dkms-build.sh falls back to an
# unsuffixed clang only where the kernel's clang-N is missing.
probes=(clang)

shell_commands() {
	local f
	for f in "${shell_files[@]}"; do
		[ -f "$f" ] || continue
		shfmt --to-json <"$f"
	done | jq -rs '
		# Functions count wherever defined: tests/checks.sh is sourced.
		[.[] | .. | objects | select(.Type == "FuncDecl") | .Name.Value] as $funcs |
		.[] | .. | objects | select(.Type == "CallExpr") | .Args[0].Parts? // empty |
		select(all(.Type == "Lit")) | map(.Value) | join("") |
		select(. as $c | $funcs | index($c) | not)'
}
# Makefile recipes: make's variables become shell variables (not literal
# commands), and the tab-indented lines are shell.
make_commands() {
	sed -n 's/^\t@\{0,1\}-\{0,1\}//p' "$top/Makefile" | sed -e 's/\$\$/$/g' -e 's/\$(\([A-Za-z_]*\))/${\1}/g' \
		-e 's/\\$//' | shfmt --to-json 2>/dev/null | jq -r '
		.. | objects | select(.Type == "CallExpr") | .Args[0].Parts? // empty |
		select(all(.Type == "Lit")) | map(.Value) | join("")'
}
rust_commands() {
	grep -rhoE 'Command::new\("[^"]+"\)' "${rust_dirs[@]}" 2>/dev/null | sed -E 's/.*\("([^"]+)"\)/\1/'
}
# The project's own programs (built by cargo) and its scripts.
own_programs() {
	grep -h -A1 '^\[\[bin\]\]' "$top"/tools/*/Cargo.toml "$top/tests/harness/Cargo.toml" |
		sed -n 's/^name = "\(.*\)"/\1/p'
	sed -n 's/^name = "\(.*\)"/\1/p' "$top"/tools/*/Cargo.toml "$top/tests/harness/Cargo.toml"
	ls "$top"/tools/target/release 2>/dev/null
}

# Packages that make deps guarantees: those it lists, Debian's base
# (Essential or Priority required, what mmdebstrap's minbase holds), and
# everything they depend on, as installed here.
guaranteed_packages() {
	{
		listed DEB_PKGS
		listed FRESH_PKGS
		listed BACKPORTS_PKGS
	} | sort -u >"$work/roots"
	dpkg-query -W -f='${Package}\t${Essential}\t${Priority}\t${Pre-Depends}, ${Depends}\t${Provides}\n' >"$work/db"
	awk -F'\t' -v roots="$work/roots" '
		function norm(d) { sub(/^ +/, "", d); sub(/[ (].*/, "", d); sub(/:any$/, "", d); return d }
		BEGIN { while ((getline r <roots) > 0) want[r] = 1 }
		{
			pkg[$1] = 1; deps[$1] = $4
			# apt too: minbase always has it, and nothing installs without it.
			if ($2 == "yes" || $3 == "required" || $1 == "apt") want[$1] = 1
			n = split($5, pv, ","); for (i = 1; i <= n; i++) provider[norm(pv[i])] = provider[norm(pv[i])] " " $1
		}
		END {
			do {
				grew = 0
				for (p in want) {
					if (done[p]++) continue
					n = split(deps[p], ds, ",")
					for (i = 1; i <= n; i++) {
						m = split(ds[i], alt, "|")
						for (j = 1; j <= m; j++) {
							d = norm(alt[j]); if (d == "") continue
							if (d in pkg && !(d in want)) { want[d] = 1; grew = 1 }
							k = split(provider[d], pr, " ")
							for (l = 1; l <= k; l++) if (!(pr[l] in want)) { want[pr[l]] = 1; grew = 1 }
						}
					}
				}
			} while (grew)
			for (p in want) print p
		}' "$work/db" | sort -u
}

package_of() {
	local path=$1 c=${1##*/} p q alt pkg
	# A command found first outside Debian's (/usr/local) counts when a
	# package would provide it too.
	for p in "$path" "$(readlink -f "$path")" "/usr/bin/$c" "/usr/sbin/$c"; do
		case "$p" in /usr/bin/* | /usr/sbin/*) alt=${p#/usr} ;; /bin/* | /sbin/*) alt=/usr$p ;; *) alt= ;; esac
		for q in "$p" $alt; do
			# "diversion by dash from: /bin/sh" lines are not owners.
			pkg=$(dpkg-query -S "$q" 2>/dev/null | grep -v '^diversion by' | head -n1 | cut -d: -f1 | cut -d, -f1)
			[ -z "$pkg" ] || { echo "$pkg"; return 0; }
		done
	done
	return 1
}

commands_have_install_steps() {
	local c path pkg bad=0 n=0
	shell_commands >"$work/cmds" || { echo "shfmt/jq could not parse the scripts"; return 1; }
	make_commands >>"$work/cmds"
	rust_commands >>"$work/cmds"
	printf '%s\n' "${indirect[@]}" >>"$work/cmds"
	own_programs | sort -u >"$work/own"
	guaranteed_packages >"$work/guaranteed"
	: >"$work/missing"
	for c in $(sort -u "$work/cmds"); do
		case "$c" in */* | *=* | -*) continue ;; esac
		case "$(type -t "$c")" in builtin | keyword) continue ;; esac
		grep -qx -- "$c" "$work/own" && continue
		printf '%s\n' "${probes[@]}" | grep -qx -- "$c" && continue
		n=$((n + 1))
		path=$(command -v -- "$c") || {
			# 'make test-fresh' installs its own (deps.sh fresh).
			listed FRESH_PKGS | grep -qx -- "$c" && continue
			echo "$c: not found on this machine"
			echo "$c" >>"$work/missing"
			bad=1
			continue
		}
		# rustup's toolchain is the machine's; what cargo installs, deps.sh installs.
		case "$path" in
		"${CARGO_HOME:-$HOME/.cargo}/bin/"*)
			case "$c" in cargo | rustc | rustup | rustfmt | rustdoc | cargo-clippy | cargo-fmt | clippy-driver) continue ;; esac
			grep -q "cargo install .*$c" "$deps" || grep -q "cargo install .*${c#cargo-}" "$deps" ||
				{ echo "$c: in ~/.cargo/bin but deps.sh never installs it"; bad=1; }
			continue
			;;
		esac
		pkg=$(package_of "$path") || {
			grep -q "command -v $c\b" "$deps" && continue
			echo "$c: $path belongs to no package and deps.sh does not check it"
			bad=1
			continue
		}
		grep -qx -- "$pkg" "$work/guaranteed" && continue
		grep -q "command -v $c\b" "$deps" && continue
		echo "$c: from package $pkg, which make deps neither installs nor pulls in"
		echo "$c" >>"$work/missing"
		bad=1
	done
	echo "$n external commands checked"
	return $bad
}
check "every command the scripts and tests call comes from a package make deps installs" \
	commands_have_install_steps

# For 'make test-fresh': the commands found missing, one a line.
[ -z "${DEPS_CHECK_MISSING:-}" ] || cp "$work/missing" "$DEPS_CHECK_MISSING" 2>/dev/null

finish deps-check
