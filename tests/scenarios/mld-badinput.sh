# /dev/mld: mldtest badinput (see tools/miglock-guest-tests).
. /lib/miglock.sh
ml_insmod
mldtest badinput
rmmod miglock
