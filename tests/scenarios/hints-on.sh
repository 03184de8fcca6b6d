# bench-hints with hints: as hints-off, and the tracer (on vCPU 1, which
# the workload does not use) touches the hot pages it found once the host
# says post-copy started, so that its faults block vCPU 1 rather than the
# workload's vCPU 0.
. /lib/miglock.sh
ml_insmod
mldtest wait-channel 30000
taskset -c 1 true || ml_fail "no taskset"
ML_TRACER_CPU=1 ml_tracer --prefetch
echo "@@MIGLOCK ready@@"
taskset -c 0 mlworkload --mld --stalls --mib 128 --hot-mib 32 --dirty-pages 2048 --tick-ms 50
ml_tracer_stop
