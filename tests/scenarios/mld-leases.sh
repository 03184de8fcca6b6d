# /dev/mld: mldtest leases (see tools/miglock-guest-tests).
. /lib/miglock.sh
ml_insmod
mldtest leases
rmmod miglock
