# SPDX-License-Identifier: GPL-2.0
#
# Counted checks for the shell test scripts (sourced): check NAME COMMAND...
# runs one check and shows the command's output when it fails; finish WORD
# prints "WORD: N passed, N failed" (the closing line tests/run-all.sh
# reads) and returns non-zero on any failure.
passed=0
failed=0

check() {
	local name=$1 out
	shift
	if out=$("$@" 2>&1); then
		passed=$((passed + 1))
		echo "ok - $name"
	else
		failed=$((failed + 1))
		echo "not ok - $name"
		printf '%s\n' "$out" | tail -n 25 | sed 's/^/    /'
	fi
}

finish() {
	echo "$1: $passed passed, $failed failed"
	[ "$failed" = 0 ]
}
