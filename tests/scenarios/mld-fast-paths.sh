# Locks the guest takes without a host round trip: one file's unlock/lock
# pairs (its grant lingers on the host), a second holder inside that grant.
# After each step the harness compares the agent's holds with the guest's
# and types "next".
. /lib/miglock.sh
ml_insmod
mldtest wait-channel 30000
mldtest fast-paths
