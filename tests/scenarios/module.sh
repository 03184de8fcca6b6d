# miglock.ko loads, shows up live, and unloads cleanly.
. /lib/miglock.sh
ml_insmod
[ "$(cat /sys/module/miglock/initstate)" = live ] || ml_fail "module not live"
dmesg | grep -q 'miglock: loaded' || ml_fail "no load message"
rmmod miglock || ml_fail "rmmod failed"
[ ! -e /sys/module/miglock ] || ml_fail "module still present after rmmod"
dmesg | grep -q 'miglock: unloaded' || ml_fail "no unload message"
echo "module loaded and unloaded"
