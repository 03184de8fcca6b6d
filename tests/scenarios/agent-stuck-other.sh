# The second VM of agent-stuck-guest's agent: it locks (the round trip
# and QEMU's blocker, timed by mldtest) while the first VM's link is stuck.
. /lib/miglock.sh
ml_insmod
mldtest wait-channel 30000
echo "@@MIGLOCK ready@@"
read -r _
mldtest lock-cost 1
