# /dev/mld: poll() wakes a holder when its lease ends, and only then.
. /lib/miglock.sh
ml_insmod
mldtest poll
rmmod miglock
