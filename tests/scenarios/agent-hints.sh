# Hint batches through /dev/mld to the real host agent: bad requests fail,
# a flood is cut to the rate without slowing locks, and the last batch
# arrives intact (the harness compares it with the agent's copy).
. /lib/miglock.sh
ml_insmod
mldtest wait-channel 30000
mldtest hints || ml_fail "mldtest hints"
grep -o 'hint_batches [0-9]* hint_frames [0-9]*' /sys/kernel/miglock/channel_stats
