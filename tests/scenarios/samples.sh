# The samples run as an application would run them.
. /lib/miglock.sh
ml_insmod
mld_critical_c >/tmp/c.out
cat /tmp/c.out
grep -q '^SET_MIGRATION_FLAG 0: *locked=1 holders=1 mine=1' /tmp/c.out || ml_fail "C sample: flag 0 did not lock"
grep -q '^SET_MIGRATION_FLAG 1: *locked=0' /tmp/c.out || ml_fail "C sample: flag 1 did not unlock"
grep -q '^MLD_IOC_LOCK (5 s lease): *locked=1 holders=1 mine=1 lease_left_ms=[1-5][0-9]*' /tmp/c.out || ml_fail "C sample: lock"
grep -q '^after close: *locked=0 holders=0' /tmp/c.out || ml_fail "C sample: close did not release"
mld-critical >/tmp/rs.out
cat /tmp/rs.out
grep -q '^event after [0-9] steps: lease expired=true' /tmp/rs.out || ml_fail "Rust sample: no lease event"
grep -q '^finished [0-9] of 10 steps' /tmp/rs.out || ml_fail "Rust sample did not stop early"
[ "$(cat /sys/kernel/miglock/state)" = unlocked ] || ml_fail "a sample left the VM locked"
rmmod miglock
