# Loading the module runs its KUnit suite; the harness checks the KTAP.
. /lib/miglock.sh
ml_insmod
cat /sys/kernel/debug/kunit/miglock/results >/dev/null || ml_fail "no KUnit debugfs results"
rmmod miglock
