# SPDX-License-Identifier: GPL-2.0
# Shell helpers for guest scenarios (sourced by /init and the scenarios).

MIGLOCK_KO=/lib/modules/miglock.ko

# Loads miglock.ko; a failure is reported in a form the harness recognises.
ml_insmod() {
	if ! insmod "$MIGLOCK_KO" "$@"; then
		echo "@@MIGLOCK fail=module-load@@"
		dmesg | tail -n 5
		exit 1
	fi
}

# Fails the scenario with a message.
ml_fail() {
	echo "FAIL: $*"
	exit 1
}

# Starts miglock-tracer in the background, sending hints; extra arguments
# go to 'miglock-tracer run'. Its log is /tmp/tracer.log.
ml_tracer() {
	miglock-tracer run --interval 1s --hints --quiet "$@" >/tmp/tracer.log 2>&1 &
}

# Starts mlwset in the background (arguments after the defaults) and waits
# until it has faulted in its memory and written its truth file.
ml_wset() {
	mlwset --seconds 100000 --truth /tmp/hot "$@" </dev/null >/tmp/ws.log 2>&1 &
	t=0
	until grep -q 'mlwset: ready' /tmp/ws.log; do
		t=$((t + 1))
		[ $t -lt 300 ] || ml_fail "mlwset never got ready: $(cat /tmp/ws.log)"
		sleep 0.2 # waiting for a file to fill: pacing, no event to wait on
	done
}
