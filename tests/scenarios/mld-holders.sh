# /dev/mld: mldtest holders (see tools/miglock-guest-tests).
. /lib/miglock.sh
ml_insmod
mldtest holders
rmmod miglock
