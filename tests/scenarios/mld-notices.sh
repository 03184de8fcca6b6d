# Every open file hears the host: an application holding a lock and one
# holding none both see a pending migration with its deadline, its
# cancellation, and on the destination the arrival; `miglock wait` returns
# for each. The harness first runs a migration the lock refuses
# (--wait-unlock 3000), types "unlock", then runs one that completes.
. /lib/miglock.sh
ml_insmod
mldtest wait-channel 30000
mkfifo /tmp/lk.in /tmp/lk.out /tmp/idle.out
mldtest notice-app lock </tmp/lk.in >/tmp/lk.out &
lk=$!
exec 5>/tmp/lk.in 4</tmp/lk.out
read -r said <&4
[ "$said" = locked ] || ml_fail "the locked application said '$said'"
mldtest notice-app idle </dev/null >/tmp/idle.out &
idle=$!
exec 6</tmp/idle.out
read -r said <&6
[ "$said" = ready ] || ml_fail "the idle application said '$said'"
miglock wait --pending --timeout 300s >/tmp/wait.pending 2>&1 &
wp=$!
miglock wait --cancelled --timeout 300s >/tmp/wait.cancelled 2>&1 &
wc=$!
miglock wait --migrated --timeout 300s >/tmp/wait.migrated 2>&1 &
wm=$!
for p in $wp $wc $wm; do ml_opened $p; done
echo "@@MIGLOCK ready@@"
read -r _
echo unlock >&5
: >/tmp/lk.log
while read -r l <&4; do
	echo "$l" >>/tmp/lk.log
	[ "$l" = unlocked ] && break
done
echo "@@MIGLOCK unlocked@@"
mlworkload --mib 16 --tick-ms 100
# On the destination now.
wait $wm || ml_fail "miglock wait --migrated: $(cat /tmp/wait.migrated)"
wait $lk || ml_fail "the locked application failed"
wait $idle || ml_fail "the idle application failed"
cat <&4 >>/tmp/lk.log
cat <&6 >/tmp/idle.log
for f in /tmp/lk.log /tmp/idle.log; do
	echo "== $f"
	cat "$f"
	grep -q '^cancelled$' "$f" || ml_fail "$f: no cancellation"
	grep -q '^migrated gen=1$' "$f" || ml_fail "$f: no arrival"
	# The refused migration gave the guest 3 s.
	awk -F= '/^pending deadline_ms=/ && $2 > 0 && $2 <= 3000 { ok = 1 } END { exit !ok }' "$f" ||
		ml_fail "$f: no pending notice with the 3 s deadline"
done
wait $wp || ml_fail "miglock wait --pending: $(cat /tmp/wait.pending)"
wait $wc || ml_fail "miglock wait --cancelled: $(cat /tmp/wait.cancelled)"
for w in pending cancelled migrated; do
	echo "miglock wait --$w: $(cat /tmp/wait.$w)"
	grep -q "$w" /tmp/wait.$w || ml_fail "miglock wait --$w said: $(cat /tmp/wait.$w)"
done
miglock status --json
