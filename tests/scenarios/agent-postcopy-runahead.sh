# Post-copy with the destination's run-ahead: the tracer's hints, as the
# source agent holds them, are read ahead in QEMU's memory on the
# destination (postcopy-preempt on both ends) while the workload rewrites
# its hot set; then it verifies every page there.
. /lib/miglock.sh
ml_insmod
mldtest wait-channel 30000
mldtest wait-postcopy 200000 &
waiter=$!
ml_tracer
echo "@@MIGLOCK ready@@"
mlworkload --mib 48 --hot-mib 16 --dirty-pages 1024 --tick-ms 50
wait $waiter || ml_fail "no post-copy notice in the guest"
ml_tracer_stop
