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
	miglock-tracer run --interval 1s --hints --quiet --record /tmp/trace.mltrace "$@" \
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
