# A lock taken while a migration is copying cancels it (before the
# switchover); the VM stays here and keeps running.
. /lib/miglock.sh
ml_insmod
mldtest wait-channel 30000
mlworkload --mib 64 --dirty-pages 2048 --tick-ms 20 --ticks 1000000 </dev/null >/dev/null &
wl=$!
echo "@@MIGLOCK ready@@"
read -r _
miglock lock --reason critical-operation --label "late lock" --lease 60s
echo "@@MIGLOCK locked@@"
read -r _
kill $wl
miglock unlock
echo "still running here"
