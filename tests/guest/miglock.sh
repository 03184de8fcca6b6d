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
