# Run-ahead prefetch under post-copy: a 32 MiB hot set of a 128 MiB
# workload; the tracer touches the hot pages once the host says post-copy
# started.
. /lib/miglock.sh
ml_insmod
mldtest wait-channel 30000
ml_wset --mib 128 --hot-fraction 0.25 --write-fraction 0.25 --pattern random --period-ms 50
ml_tracer --prefetch
echo "@@MIGLOCK ready@@"
mlworkload --mib 4 --dirty-pages 1 --tick-ms 100
ml_tracer_stop
