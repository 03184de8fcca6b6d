# The tracer's own CPU cost in a 1 GiB guest at 1 s: a 256 MiB workload with
# a 64 MiB hot set, 20 samples, then the tracer's summary line.
. /lib/miglock.sh
ml_insmod
ml_wset --mib 256 --hot-fraction 0.25 --write-fraction 0.25 --pattern random --period-ms 100
echo "== every process, kpageflags every 4 samples (the defaults)"
miglock-tracer run --interval 1s --samples 20 --no-hints --quiet 2>&1 | tee /tmp/cost.log
grep -q '^tracer: cpu' /tmp/cost.log || ml_fail "no CPU figure from the tracer"
echo "== soft-dirty for the workload only (--pid), kpageflags every 16 samples"
miglock-tracer run --interval 1s --samples 20 --no-hints --quiet --pid "$(pidof mlwset)" \
	--lru-refresh 16 2>&1 | tee /tmp/cost.log
grep -q '^tracer: cpu' /tmp/cost.log || ml_fail "no CPU figure from the tracer"
echo "== a quarter of the idle bitmap each interval (--idle-share 4), defaults otherwise"
miglock-tracer run --interval 1s --samples 20 --no-hints --quiet --idle-share 4 2>&1 | tee /tmp/cost.log
grep -q '^tracer: cpu' /tmp/cost.log || ml_fail "no CPU figure from the tracer"
echo "== idle bitmap and model only: soft-dirty for /init alone (a tiny process)"
miglock-tracer run --interval 1s --samples 20 --no-hints --quiet --pid 1 \
	--lru-refresh 16 2>&1 | tee /tmp/cost.log
grep -q '^tracer: cpu' /tmp/cost.log || ml_fail "no CPU figure from the tracer"
echo "== the same model and ranking work alone, to compare with the host (TCG slowdown)"
miglock-tracer bench --frames 262144 --samples 20
