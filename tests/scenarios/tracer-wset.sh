# The tracer finds a known working set: mlwset touches a chosen quarter of
# its 64 MiB (a quarter of those by writing) and writes down their frames;
# the tracer's hot set must match with high precision and recall.
. /lib/miglock.sh
ml_insmod
# mlwset runs until its stdin closes.
mkfifo /tmp/ws.in
mlwset --mib 64 --hot-fraction 0.25 --pattern random --write-fraction 0.25 --period-ms 100 \
	--seconds 0 --truth /tmp/hot --all-pfns /tmp/all </tmp/ws.in >/tmp/ws.log 2>&1 &
ws=$!
exec 3>/tmp/ws.in
ml_wset_ready
miglock-tracer run --interval 500ms --samples 8 --no-hints --quiet --record /tmp/ws.mltrace ||
	ml_fail "miglock-tracer run"
miglock-tracer show /tmp/ws.mltrace || ml_fail "miglock-tracer show"
echo "== precision and recall within mlwset's memory"
miglock-tracer eval --trace /tmp/ws.mltrace --truth /tmp/hot --universe /tmp/all --last 3 \
	--min-precision 0.9 --min-recall 0.9 || ml_fail "the hot set does not match"
echo "== precision over the whole guest (other processes count against it)"
miglock-tracer eval --trace /tmp/ws.mltrace --truth /tmp/hot --last 3
echo "== the cheaper sampling: a quarter of the idle bitmap each interval"
miglock-tracer run --interval 500ms --samples 8 --no-hints --quiet --idle-share 4 \
	--record /tmp/ws4.mltrace || ml_fail "miglock-tracer run --idle-share 4"
miglock-tracer eval --trace /tmp/ws4.mltrace --truth /tmp/hot --universe /tmp/all --last 4 \
	--min-precision 0.9 --min-recall 0.9 || ml_fail "the hot set does not match (--idle-share 4)"
exec 3>&-
wait $ws || ml_fail "mlwset: $(cat /tmp/ws.log)"
cat /tmp/ws.log
