# Planner, write-heavy, calmed: the same workload as plan-writeheavy, but an
# application that hears the host's pending-migration notice on /dev/mld
# and defers its work (ticks 64 times slower) until post-copy starts, the
# migration is called off or the VM arrives.
. /lib/miglock.sh
ml_insmod
mldtest wait-channel 30000
ml_tracer
echo "@@MIGLOCK ready@@"
mlworkload --mib 64 --dirty-pages 2048 --tick-ms 20 --mld --calm-when-pending 64
ml_tracer_stop
