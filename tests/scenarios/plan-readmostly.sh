# Planner, read-mostly: a 64 MiB working set read over and over, a trickle
# of writes.
. /lib/miglock.sh
ml_insmod
mldtest wait-channel 30000
ml_wset --mib 64 --hot-fraction 1 --write-fraction 0 --period-ms 100
ml_tracer
echo "@@MIGLOCK ready@@"
mlworkload --mib 4 --dirty-pages 1 --tick-ms 100 ${ML_MLD:-}
ml_tracer_stop
