# miglockctl migrate --wait-unlock: the agent announces the migration, the
# application's poll() wakes, it finishes and unlocks, and the VM migrates.
. /lib/miglock.sh
ml_insmod
mldtest wait-channel 30000
mkfifo /tmp/out
mldtest hold-until-notice >/tmp/out &
exec 4</tmp/out
read -r said <&4
[ "$said" = locked ] || ml_fail "holder said '$said'"
echo "@@MIGLOCK locked@@"
read -r said <&4
echo "holder: $said"
wait
mlworkload --mib 16 --tick-ms 100
