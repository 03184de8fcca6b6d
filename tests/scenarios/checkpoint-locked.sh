# A live checkpoint of a locked VM: it is taken (the VM does not move) and
# every application hears it begin and end; a migration asked for meanwhile
# is refused by the agent.
. /lib/miglock.sh
ml_insmod
mldtest wait-channel 30000
miglock wait --checkpoint --timeout 300s >/tmp/wait.checkpoint 2>&1 &
wk=$!
miglock wait --checkpoint-done --timeout 300s >/tmp/wait.checkpoint-done 2>&1 &
wd=$!
for p in $wk $wd; do ml_opened $p; done
miglock lock --reason critical-operation --label "nightly report" --lease 100s
echo "@@MIGLOCK ready@@"
mlworkload --mib 32 --dirty-pages 256 --tick-ms 100 --mld
wait $wk || ml_fail "miglock wait --checkpoint: $(cat /tmp/wait.checkpoint)"
wait $wd || ml_fail "miglock wait --checkpoint-done: $(cat /tmp/wait.checkpoint-done)"
for w in checkpoint checkpoint-done; do
	echo "miglock wait --$w: $(cat /tmp/wait.$w)"
	grep -qw -- "$w" /tmp/wait.$w || ml_fail "miglock wait --$w said: $(cat /tmp/wait.$w)"
done
miglock status
miglock unlock
