# The agent is killed and restarted while the guest holds its lock: the VM
# stays locked (persisted state, and the guest's resync), then migrates
# after the unlock.
. /lib/miglock.sh
ml_insmod
mldtest wait-channel 30000
miglock lock --reason critical-code --label "restart test" --lease 60s
echo "@@MIGLOCK locked@@"
read -r _
miglock unlock
echo "@@MIGLOCK unlocked@@"
mlworkload --mib 16 --tick-ms 100
