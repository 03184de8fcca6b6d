# A forced migration (with a reason) overrides the lock; the guest is told
# (forced release) and its holds are void.
. /lib/miglock.sh
ml_insmod
mldtest wait-channel 30000
miglock lock --reason special-hardware --label "gpu pinned" --lease 60s
echo "@@MIGLOCK locked@@"
mlworkload --mib 16 --tick-ms 100
miglock status --json | grep -q '"forced_release":true' || ml_fail "no forced release: $(miglock status --json)"
miglock status --json | grep -q '"locked":false' || ml_fail "still locked after a forced release"
