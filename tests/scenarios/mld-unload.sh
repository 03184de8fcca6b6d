# Module unload while locked: refused while a file is open (the kernel pins
# the module); a detached hold without open files is released cleanly at
# unload and logged.
. /lib/miglock.sh
ml_insmod
mkfifo /tmp/ctl /tmp/out
mldtest hold </tmp/ctl >/tmp/out &
exec 3>/tmp/ctl 4</tmp/out
read -r said <&4 # blocks until the holder has locked
[ "$said" = locked ] || ml_fail "holder said '$said'"
if rmmod miglock 2>/tmp/err; then ml_fail "rmmod succeeded while a file holds the lock"; fi
echo "rmmod refused while locked: $(cat /tmp/err)"
echo exit >&3
wait
miglock lock --reason special-hardware --label "pinned"
rmmod miglock || ml_fail "rmmod failed with only a detached hold"
dmesg | grep -q 'miglock: unloaded while locked: released 1 hold' || ml_fail "no release message at unload"
ml_insmod
miglock status --json | grep -q '"locked":false' || ml_fail "state survived the reload"
rmmod miglock
