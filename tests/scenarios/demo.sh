# The demo: load the module, show it live and its KUnit results, unload it.
. /lib/miglock.sh
echo "== loading miglock.ko"
ml_insmod
echo "== module state: $(cat /sys/module/miglock/initstate)"
echo "== KUnit results (from debugfs):"
sed -n 's/^/   /p' /sys/kernel/debug/kunit/miglock/results | grep -E 'ok|# miglock' || true
echo "== kernel log:"
dmesg | grep -E '^miglock' | sed 's/^/   /'
rmmod miglock
echo "== unloaded"
