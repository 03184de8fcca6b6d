#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Runs every test of the project and ends with one line:
#   summary: N passed, N failed
# Phases: the userspace workspace (fmt, clippy, unit tests), the Debian
# packages (built, then inspected), the kernel module (build, clippy,
# rustfmt), and the guest scenarios in QEMU (KUnit, live
# migration, harness selftests). A failing phase does not stop the others.
# Called by 'make test', after the kernel and the harness are built.
#
# The guest scenarios leave most of the two cores idle (they wait on guests
# and timeouts), so the compiling phases run beside them at the lowest CPU
# priority (the "lane"): a QEMU thread always goes first, and nothing in the
# lane measures time. The workspace's tests, which do wait on deadlines, run
# after both, already compiled.
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
logs=$top/out/test-logs
mkdir -p "$logs"
cd "$top"
results=$logs/results
: >"$results"

# phase NAME COUNT-PARSER COMMAND...: runs COMMAND with output in a log file.
phase() {
	local name=$1 parser=$2
	shift 2
	local log=$logs/$name.log t0=$SECONDS rc p f
	"$@" >"$log" 2>&1
	rc=$?
	read -r p f < <($parser "$log" "$rc")
	echo "$name $p $f $rc" >>"$results"
	# One write per report: the lane's and the scenarios' lines interleave.
	if [ "$rc" = 0 ] && [ "$f" = 0 ]; then
		printf 'test: %-22s ok (%d passed, %d s)\n' "$name" "$p" $((SECONDS - t0)) >&2
	else
		printf 'test: %-22s FAILED (%d passed, %d failed, %d s); log: %s\n%s\n' "$name" "$p" "$f" \
			$((SECONDS - t0)) "$log" "$(tail -n 25 "$log" | sed 's/^/    /')" >&2
	fi
}

# One check: passes when the command did.
single() { if [ "$2" = 0 ]; then echo "1 0"; else echo "0 1"; fi; }

# Sums cargo's per-binary "test result" lines; a crash with no line counts as a failure.
cargo_counts() {
	awk -v rc="$2" '/^test result:/ { for (i = 1; i <= NF; i++) {
			if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
		END { if (rc != 0 && f == 0) f = 1; print p + 0, f + 0 }' "$1"
}

# A closing line "WORD: N passed, N failed" (the harness's, the package
# check's); none counts as a failure.
closing_counts() {
	local line
	line=$(grep -E '^[a-z-]+: [0-9]+ passed, [0-9]+ failed' "$1" | tail -n1)
	if [ -z "$line" ]; then echo "0 1"; return; fi
	echo "$line" | awk '{ print $2, $4 }'
}
harness_counts() { closing_counts "$@"; }

cargo_in_tools() { (cd tools && cargo "$@"); }

phase deps-check       closing_counts tests/deps-check.sh
phase workspace-fmt      single        cargo_in_tools fmt --all -- --check

# The lane: compiles and packages at nice 19 beside the guest scenarios.
# Not the module's builds: the harness boots the in-tree rust/miglock.ko.
printf 'test: compiling beside the guest scenarios (nice 19): clippy, tests, packages, fuzz\n' >&2
(
	renice -n 19 -p $BASHPID >/dev/null
	phase workspace-clippy   single        cargo_in_tools clippy --release --locked --workspace --all-targets -- -D warnings
	phase workspace-build    single        cargo_in_tools test --release --locked --workspace --no-run
	phase deb                single        make -s deb
	phase packages           closing_counts tests/packages.sh
	phase fuzz               single        make -s fuzz FUZZ_SECONDS=5
) &
lane=$!

phase module-build       single        make -s module
phase module-clippy      single        make -s clippy
phase module-archcheck   single        make -s archcheck
phase module-rustfmt     single        make -s rustfmtcheck

# Guest scenarios stream their progress: they take the longest.
printf 'test: guest scenarios (logs under out/scenarios/)\n' >&2
t0=$SECONDS
"$top/tools/target/release/miglock-harness" run 2>&1 | tee "$logs/guest-scenarios.log" | grep -E '^harness: (RUN|PASS|FAIL|accel|error)|^  ' >&2
read -r p f < <(harness_counts "$logs/guest-scenarios.log" 0)
echo "guest-scenarios $p $f 0" >>"$results"
printf 'test: guest scenarios: %d passed, %d failed (%d s)\n' "$p" "$f" $((SECONDS - t0)) >&2

t0=$SECONDS
wait "$lane"
[ $((SECONDS - t0)) -lt 2 ] || printf 'test: waited %d s for the lane\n' $((SECONDS - t0)) >&2
# Compiled in the lane; run at normal priority, as their deadlines assume.
phase workspace-tests    cargo_counts  cargo_in_tools test --release --locked --workspace --no-fail-fast

read -r passed failed < <(awk '{ p += $2; f += $3 } END { print p + 0, f + 0 }' "$results")
mapfile -t failures < <(awk '$3 != 0 || $4 != 0 { print $1 }' "$results")

# Repeat what failed next to the summary, where a reader of the tail looks.
for name in "${failures[@]}"; do
	log=$logs/$name.log
	[ "$name" = guest-scenarios ] && log=$logs/guest-scenarios.log
	printf 'test: %s failed; first failures (log: %s):\n' "$name" "$log" >&2
	grep -E -A1 -- '^test .* FAILED$|panicked at|^harness: FAIL|^error' "$log" | head -n 12 | sed 's/^/    /' >&2
done
[ ${#failures[@]} -eq 0 ] || printf 'test: failed phases: %s\n' "${failures[*]}" >&2
echo "summary: $passed passed, $failed failed"
[ "$failed" = 0 ]
