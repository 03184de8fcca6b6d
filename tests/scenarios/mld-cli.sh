# The guest CLIs end to end: miglock status/lock/unlock/run, set_migration_flag.
. /lib/miglock.sh
ml_insmod
json() { miglock status --json; }
json | grep -q '"locked":false' || ml_fail "not unlocked at start: $(json)"

miglock lock --reason critical-code --lease 30s --label "db commit"
json | grep -q '"locked":true' || ml_fail "lock did not lock: $(json)"
json | grep -q '"detached_hold":true' || ml_fail "no detached hold: $(json)"
miglock status
miglock unlock
json | grep -q '"locked":false' || ml_fail "unlock did not unlock: $(json)"

# run holds the lock exactly while the command runs and returns its status.
rc=0
miglock run --reason critical-operation --label "txn" -- sh -c 'miglock status --json | grep -q "\"locked\":true" && exit 7; exit 1' || rc=$?
[ "$rc" = 7 ] || ml_fail "miglock run returned $rc, expected the command's 7"
json | grep -q '"locked":false' || ml_fail "lock outlived miglock run: $(json)"
rc=0
miglock run -- /bin/false || rc=$?
[ "$rc" = 1 ] || ml_fail "miglock run -- false returned $rc"

# Bad input: clear errors, nothing changes.
rc=0; miglock lock --reason nonsense 2>/tmp/err || rc=$?
[ "$rc" != 0 ] && grep -q "unknown reason" /tmp/err || ml_fail "bad reason accepted"
rc=0; miglock lock --label "$(printf 'x%.0s' $(seq 40))" 2>/tmp/err || rc=$?
[ "$rc" != 0 ] && grep -q "label" /tmp/err || ml_fail "long label accepted"
rc=0; miglock lock --lease 2h 2>/tmp/err || rc=$?
[ "$rc" != 0 ] && grep -q "Invalid argument" /tmp/err || ml_fail "lease above the maximum accepted"
json | grep -q '"locked":false' || ml_fail "a refused call changed state: $(json)"

# The paper's tool.
set_migration_flag 0
json | grep -q '"locked":true' || ml_fail "set_migration_flag 0 did not lock"
set_migration_flag 1
json | grep -q '"locked":false' || ml_fail "set_migration_flag 1 did not unlock"
set_migration_flag 1 || ml_fail "set_migration_flag 1 when unlocked failed"
rc=0; set_migration_flag 3 || rc=$?
[ "$rc" = 2 ] || ml_fail "set_migration_flag 3 returned $rc, expected usage error 2"
rmmod miglock
echo "CLI checks passed"
