# A guest's report of a hold the host never granted locks nothing. The
# guest locks under one agent; it is replaced by one that knows of no grant
# and whose policy forbids guest locks (guest_locks = false). The module
# reports its hold to the new agent, which refuses it (audited), and a
# migrate from another QMP client completes with the guest whole.
. /lib/miglock.sh
ml_insmod
mldtest wait-channel 30000
miglock lock --reason critical-operation --label "granted before" --lease 60s
echo "@@MIGLOCK locked@@"
read -r _
mlworkload --mib 16 --dirty-pages 64 --tick-ms 50
