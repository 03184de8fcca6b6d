# set_migration_flag(2), the paper's syscall (patches/0001): ENOSYS without
# the module, then lock/unlock/ret/errors with it; and the CLI uses it.
. /lib/miglock.sh
mldtest syscall-absent
ml_insmod
mldtest syscall
set_migration_flag 0 | grep -q 'via syscall' || ml_fail "set_migration_flag did not use the syscall"
[ "$(cat /sys/kernel/miglock/state)" = locked ] || ml_fail "sysfs state not locked"
set_migration_flag 1
[ "$(cat /sys/kernel/miglock/state)" = unlocked ] || ml_fail "sysfs state not unlocked"
rmmod miglock
