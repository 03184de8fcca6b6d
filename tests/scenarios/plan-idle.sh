# Planner, idle: nothing but a ticker.
. /lib/miglock.sh
ml_insmod
mldtest wait-channel 30000
ml_tracer
echo "@@MIGLOCK ready@@"
mlworkload --mib 4 --dirty-pages 1 --tick-ms 100 ${ML_MLD:-}
ml_tracer_stop
