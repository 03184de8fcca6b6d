# A guest lock is QEMU's own migration blocker: a migrate from any QMP
# client fails with the lock's reason until the guest unlocks. First, what
# a lock costs when the host adds the blocker, and when it need not.
. /lib/miglock.sh
ml_insmod
mldtest wait-channel 30000
mldtest lock-cost 5
miglock lock --reason critical-operation --label "any initiator" --lease 60s
echo "@@MIGLOCK locked@@"
read -r _
miglock unlock
echo "@@MIGLOCK unlocked@@"
mlworkload --mib 16 --dirty-pages 64 --tick-ms 50
