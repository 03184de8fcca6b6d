# The same workload and migration as prefetch-on, without the run-ahead.
. /lib/miglock.sh
ml_insmod
mldtest wait-channel 30000
ml_wset --mib 128 --hot-fraction 0.25 --write-fraction 0.25 --pattern random --period-ms 50
ml_tracer --no-prefetch
echo "@@MIGLOCK ready@@"
mlworkload --mib 4 --dirty-pages 1 --tick-ms 100
ml_tracer_stop
