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
	${ML_TRACER_CPU:+taskset -c "$ML_TRACER_CPU"} miglock-tracer run --interval 1s --hints --quiet --record /tmp/trace.mltrace "$@" \
		>/tmp/tracer.log 2>&1 &
	ML_TRACER=$!
}

# Stops the tracer (it ends its trace file cleanly) and shows its summary;
# with ML_DUMP set, prints the trace in base64 between markers for the
# harness to collect.
ml_tracer_stop() {
	kill -TERM "$ML_TRACER"
	wait "$ML_TRACER" || true
	grep -E '^(tracer|prefetch):' /tmp/tracer.log || true
	[ -n "${ML_DUMP:-}" ] || return 0
	echo "@@MIGLOCK trace-begin@@"
	base64 /tmp/trace.mltrace
	echo "@@MIGLOCK trace-end@@"
}

# Starts mlwset in the background (arguments after the defaults) and waits
# until it has faulted in its memory and written its truth file.
ml_wset() {
	mlwset --seconds 100000 --truth /tmp/hot "$@" </dev/null >/tmp/ws.log 2>&1 &
	ml_wset_ready
}

# Waits (at most 60 s) until mlwset, logging to /tmp/ws.log, is ready.
ml_wset_ready() {
	t=0
	until grep -q 'mlwset: ready' /tmp/ws.log; do
		t=$((t + 1))
		[ $t -lt 300 ] || ml_fail "mlwset never got ready: $(cat /tmp/ws.log)"
		sleep 0.2 # waiting for a file to fill: pacing, no event to wait on
	done
}

# Waits (at most 10 s) until process PID has /dev/mld open.
ml_opened() {
	t=0
	until ls -l "/proc/$1/fd" 2>/dev/null | grep -q /dev/mld; do
		t=$((t + 1))
		[ $t -lt 100 ] || ml_fail "process $1 never opened /dev/mld"
		sleep 0.1 # waiting for a process to start: pacing, no event to wait on
	done
}
