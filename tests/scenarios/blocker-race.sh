# The guest locks and unlocks at random while another QMP client starts
# migrations at random moments; the workload is verified after each one.
. /lib/miglock.sh
ml_insmod
mldtest wait-channel 30000
mldtest lock-race 900 7 >/tmp/race.log 2>&1 &
race=$!
echo "@@MIGLOCK ready@@"
mlworkload --mib 16 --dirty-pages 64 --tick-ms 50
touch /tmp/stop-race
wait $race
cat /tmp/race.log
