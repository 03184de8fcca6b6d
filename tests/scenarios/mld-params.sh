# Module parameters: the static lock, the maximum lease, the device mode, the
# lock group; bad values refuse to load. And the sysfs status files.
. /lib/miglock.sh
p=/sys/module/miglock/parameters
s=/sys/kernel/miglock

for bad in max_lease_ms=0 max_lease_ms=86400001 dev_mode=0777 lock_gid=-5; do
	if insmod "$MIGLOCK_KO" "$bad" 2>/dev/null; then ml_fail "loaded with $bad"; fi
	[ ! -e /sys/module/miglock ] || ml_fail "module present after refused $bad"
done
dmesg | grep -q 'max_lease_ms=0 out of range' || ml_fail "no message for a bad max_lease_ms"

ml_insmod locked=1 max_lease_ms=2000 dev_mode=0600
[ "$(cat $p/locked)" = Y ] && [ "$(cat $p/max_lease_ms)" = 2000 ] || ml_fail "parameters not shown"
[ "$(cat $s/state)" = locked ] || ml_fail "static lock: sysfs state is $(cat $s/state)"
[ "$(cat $s/holders)" = 0 ] || ml_fail "the static lock is no holder"
grep -q '^static ' $s/holds || ml_fail "holds does not list the static lock"
ls -l /dev/mld | grep -q '^crw-------' || ml_fail "dev_mode not applied: $(ls -l /dev/mld)"
miglock status --json | grep -q '"static_lock":true' || ml_fail "status: no static lock"
rc=0; miglock lock --lease 3s 2>/dev/null || rc=$?
[ "$rc" != 0 ] || ml_fail "lease above max_lease_ms=2000 accepted"
miglock lock --reason confidential --lease 1500ms --label "keys in memory"
grep -q '^detached confidential [0-9]* keys in memory$' $s/holds || ml_fail "holds: $(cat $s/holds)"
lease=$(cat $s/lease)
[ "$lease" -gt 0 ] && [ "$lease" -le 1500 ] || ml_fail "sysfs lease $lease"
set_migration_flag 1
[ "$(cat $s/state)" = unlocked ] || ml_fail "set_migration_flag 1 left $(cat $s/state)"
[ "$(cat $s/channel)" = local ] || ml_fail "channel: $(cat $s/channel)"
rmmod miglock

# The lock group: its members may lock, others may not.
ml_insmod lock_gid=1234
out=$(mldtest try-lock 1000 1234 2>&1)
[ "$out" = locked ] || ml_fail "member of lock_gid could not lock: $out"
out=$(mldtest try-lock 1000 5678 2>&1)
[ "$out" = EPERM ] || ml_fail "non-member could lock: $out"
rmmod miglock
echo "parameter checks passed"
