# A lost interrupt: the module listens on an interrupt line nothing raises
# (doorbell_irq=7; the UART stays on 5), so only its watchdog, about once a
# second, reads what the host sent. The channel must still connect and a
# lock be decided by the host, and channel_stats must show the rescues.
. /lib/miglock.sh
ml_insmod doorbell_irq=7
mldtest wait-channel 30000
json() { miglock status --json; }
miglock lock --reason critical-code --label through-the-watchdog --lease 10s
json | grep -q '"last_decision":"granted"' || ml_fail "not granted by the host: $(json)"
miglock unlock
stats=$(cat /sys/kernel/miglock/channel_stats)
rescued=$(echo "$stats" | awk '{for (i = 1; i < NF; i++) if ($i == "rescued") print $(i + 1)}')
[ "${rescued:-0}" -gt 0 ] || ml_fail "the watchdog read nothing: $stats"
echo "channel: $stats"
