# Benchmark (not a test): lock round trips through the real host agent, first
# under its default per-guest rate limit, then with the limit raised (the
# harness restarts the agent in between); then qemu-ga on ttyS1 answers the
# harness's guest-pings.
. /lib/miglock.sh
ml_insmod
mldtest wait-channel 30000
qemu-ga -m isa-serial -p /dev/ttyS1 -t /tmp -f /tmp/qga.pid -l /tmp/qga.log &
mldtest bench-lock 1000
echo "channel: $(cat /sys/kernel/miglock/channel_stats)"
echo "@@MIGLOCK lock-bench-done@@"
read -r _
mldtest bench-lock 1000
echo "channel: $(cat /sys/kernel/miglock/channel_stats)"
echo "@@MIGLOCK lock-bench2-done@@"
read -r _
kill %1 2>/dev/null || true
