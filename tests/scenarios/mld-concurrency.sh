# /dev/mld: many threads lock, unlock, renew and close at once; afterwards the
# VM is exactly unlocked with zero holders, and the module unloads.
. /lib/miglock.sh
ml_insmod
mldtest concurrency 8 20000
rmmod miglock
