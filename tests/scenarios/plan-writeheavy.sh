# Planner, write-heavy: 64 MiB rewritten faster than the capped link sends.
. /lib/miglock.sh
ml_insmod
mldtest wait-channel 30000
ml_tracer
echo "@@MIGLOCK ready@@"
mlworkload --mib 64 --dirty-pages 2048 --tick-ms 20 ${ML_MLD:-}
ml_tracer_stop
