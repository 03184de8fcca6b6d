# 64 threads lock (each with its own lease) and unlock at once against
# miglockd: every call gets its own answer, none times out, none is
# decided locally, none carries another thread's lease. No linger and an
# agent that takes no Held holds: every lock is a request.
. /lib/miglock.sh
ml_insmod linger_ms=0
mldtest wait-channel 30000
mldtest request-storm 64 20
cat /sys/kernel/miglock/channel_stats
