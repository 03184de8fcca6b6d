# The demo: load the module (its KUnit suite runs and prints KTAP), an
# application locks, the status changes.
. /lib/miglock.sh
echo "== loading miglock.ko"
ml_insmod
echo "== status before:"
miglock status
echo "== an application runs a critical operation under the lock:"
miglock run --reason critical-operation --label "demo transaction" -- sh -c 'echo "   (inside the critical section)"; miglock status'
echo "== status after it ended:"
miglock status
echo "== the paper's tool: set_migration_flag 0, then 1"
set_migration_flag 0
miglock status --json
set_migration_flag 1
miglock status --json
rmmod miglock
echo "== unloaded"
