# The shim over the doorbell UART against the harness's stub host (which
# grants, refuses "refuse*" labels, caps leases at 60 s and announces a
# migration after granting "await-notice").
. /lib/miglock.sh
ml_insmod
dmesg | grep -q 'host channel: connected' || ml_fail "module did not connect: $(dmesg | grep miglock)"
# Stock QEMU offers no vmcall backend: the module must have noticed and kept the UART.
dmesg | grep -q 'vmcall backend: not offered' || ml_fail "no vmcall fallback message: $(dmesg | grep vmcall)"
[ "$(cat /sys/kernel/miglock/channel)" = connected ] || ml_fail "sysfs channel: $(cat /sys/kernel/miglock/channel)"
json() { miglock status --json; }
json | grep -q '"host_channel":true' || ml_fail "status: no host channel"

miglock lock --reason critical-code --label granted-by-host --lease 10s
json | grep -q '"last_decision":"granted"' || ml_fail "not granted: $(json)"
miglock unlock

rc=0; miglock lock --label refuse-me 2>/tmp/err || rc=$?
[ "$rc" != 0 ] && grep -q "Permission denied" /tmp/err || ml_fail "refusal not reported: rc=$rc $(cat /tmp/err)"
json | grep -q '"last_decision":"refused"' || ml_fail "status after refusal: $(json)"
json | grep -q '"locked":false' || ml_fail "a refused lock changed state: $(json)"

miglock lock --label capped --lease 2m
lease=$(cat /sys/kernel/miglock/lease)
[ "$lease" -le 60000 ] || ml_fail "host lease cap not applied: $lease ms left"
# A renewal asks the host too, and gets its cap.
miglock renew --lease 3m
lease=$(cat /sys/kernel/miglock/lease)
[ "$lease" -gt 1000 ] && [ "$lease" -le 60000 ] || ml_fail "renew: $lease ms left"
miglock unlock

mldtest host-notice
rmmod miglock
