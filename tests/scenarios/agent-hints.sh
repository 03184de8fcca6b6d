# Hint batches through /dev/mld to the real host agent: bad requests fail,
# a flood is cut to the rate without slowing locks, and the last batch
# arrives intact (the harness compares it with the agent's copy). The rate
# is a quarter of the default, well under what the UART carries even when
# the host is loaded: at 64 frames/s a slow guest never outran it.
. /lib/miglock.sh
ml_insmod hint_rate=16
mldtest wait-channel 30000
mldtest hints || ml_fail "mldtest hints"
grep -o 'hint_batches [0-9]* hint_frames [0-9]*' /sys/kernel/miglock/channel_stats
