# bench-hints: mlworkload rewrites random pages of a 32 MiB hot set in
# 128 MiB (2048 pages every 50 ms tick, the shape of prefetch-on's mlwset),
# times every rewrite and verifies all its memory at the end. It runs on
# vCPU 0; the tracer, whose hints the destination's run-ahead reads, on
# vCPU 1.
. /lib/miglock.sh
ml_insmod
mldtest wait-channel 30000
taskset -c 1 true || ml_fail "no taskset"
ML_TRACER_CPU=1 ml_tracer --no-prefetch
echo "@@MIGLOCK ready@@"
taskset -c 0 mlworkload --mld --stalls --mib 128 --hot-mib 32 --dirty-pages 2048 --tick-ms 50
ml_tracer_stop
