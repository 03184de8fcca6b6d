# Two holders, one through SET_MIGRATION_FLAG 0; it lets go with
# SET_MIGRATION_FLAG 1 while the other holds on, then the other closes.
# After each step the harness compares the agent's holds with the guest's
# and types "next".
. /lib/miglock.sh
ml_insmod
mldtest wait-channel 30000
mldtest flag-release
