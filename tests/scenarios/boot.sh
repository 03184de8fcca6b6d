# The guest boots, has its filesystems and a console.
. /lib/miglock.sh
uname -r | grep -q '^6\.12\.' || ml_fail "unexpected kernel $(uname -r)"
[ -c /dev/console ] || ml_fail "no /dev/console"
grep -q ' /sys/kernel/debug ' /proc/mounts || ml_fail "debugfs not mounted"
[ -e /sys/kernel/mm/page_idle/bitmap ] || ml_fail "idle page tracking missing"
echo "booted $(uname -r)"
