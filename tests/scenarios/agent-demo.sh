# The whole story with the real host agent: an application locks, the
# migration is refused with its reason, the application unlocks, the VM
# migrates and goes on, and the destination's agent takes over the state.
. /lib/miglock.sh
ml_insmod
mldtest wait-channel 30000
echo "== an application locks: a payment batch must not be interrupted"
miglock lock --reason critical-operation --label "payment batch" --lease 60s
miglock status
echo "@@MIGLOCK locked@@"
read -r _
echo "== the batch is done: the application unlocks"
miglock unlock
echo "@@MIGLOCK unlocked@@"
mlworkload --mib 16 --dirty-pages 128 --tick-ms 100
echo "== on the destination host:"
miglock status
