# Benchmark (not a test): lock round trip through the real host agent, then
# qemu-ga on ttyS1 for the harness's guest-ping round trip.
. /lib/miglock.sh
ml_insmod
mldtest wait-channel 30000
qemu-ga -m isa-serial -p /dev/ttyS1 -t /tmp -f /tmp/qga.pid -l /tmp/qga.log &
mldtest bench-lock 2000
echo "@@MIGLOCK lock-bench-done@@"
read -r _
kill %1 2>/dev/null || true
