# SIGALRM (a handler without SA_RESTART) lands while lock requests wait for
# the stub host, which answers after 10 ms and refuses every fifth: no call
# returns 0 without the host's grant, an interrupted one returns EINTR and
# leaves no hold, and the guest's holds end equal to the host's (the
# harness compares them before typing "done").
. /lib/miglock.sh
ml_insmod
dmesg | grep -q 'host channel: connected' || ml_fail "module did not connect: $(dmesg | grep miglock)"
mldtest interrupted-lock 1000 7
cat /sys/kernel/miglock/channel_stats
