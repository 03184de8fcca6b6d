# Post-copy through both agents: the destination's agent receives the VM and
# tells the guest when it runs there; a poller sees that once.
. /lib/miglock.sh
ml_insmod
mldtest wait-channel 30000
mldtest wait-postcopy 200000 &
waiter=$!
mlworkload --mib 32 --dirty-pages 256 --tick-ms 100
wait $waiter || ml_fail "no post-copy notice in the guest"
