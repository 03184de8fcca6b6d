# /dev/mld: random ioctl commands, sizes and pointers (bounded, seeded); the
# state ends consistent, and /init fails the run on any oops or warning.
. /lib/miglock.sh
ml_insmod
mldtest fuzz 20000 1
mldtest fuzz 20000 2
rmmod miglock
