# The agent stops (SIGTERM, then SIGKILL) while miglockctl migrate runs;
# the host side checks that no migration is left paused at pre-switchover.
# The guest only has to live through it: its workload ticks and verifies
# its memory wherever it runs, as often as the harness asks.
. /lib/miglock.sh
ml_insmod
mldtest wait-channel 30000
echo "@@MIGLOCK ready@@"
mlworkload --mib 16 --dirty-pages 64 --tick-ms 50
