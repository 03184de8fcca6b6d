# The doorbell with no host answering: locks are decided locally at once (or
# fail with host_required=1); when the host appears it announces itself,
# the guest reconnects and resends its state, and locks go to the host.
. /lib/miglock.sh
ml_insmod host_required=1
dmesg | grep -q 'host channel: no answer yet' || ml_fail "no 'no answer' message"
[ "$(cat /sys/kernel/miglock/channel)" = disconnected ] || ml_fail "channel: $(cat /sys/kernel/miglock/channel)"
rc=0; miglock lock --label required 2>/tmp/err || rc=$?
[ "$rc" != 0 ] && grep -q "timed out" /tmp/err || ml_fail "host_required lock without a host: rc=$rc $(cat /tmp/err)"
rmmod miglock

ml_insmod
miglock lock --label held-across --lease 60s
miglock status --json | grep -q '"last_decision":"local (no host channel)"' || ml_fail "not local: $(miglock status --json)"
echo "@@MIGLOCK want-host@@"
mldtest wait-channel 20000
miglock status --json | grep -q '"host_channel":true' || ml_fail "status: not connected"
miglock run --label after-reconnect -- miglock status --json | grep -q '"last_decision":"granted"' || ml_fail "lock after reconnect not granted"
miglock unlock
rmmod miglock
