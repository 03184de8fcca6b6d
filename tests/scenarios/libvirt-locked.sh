# A guest under libvirt: it locks, and then obeys what is typed on its
# console (lock, unlock, verify, finish) while its workload runs, so the
# harness can lock it in the middle of a virsh migrate.
. /lib/miglock.sh
ml_insmod
mldtest wait-channel 30000
miglock lock --reason critical-operation --label "libvirt test" --lease 120s
echo "@@MIGLOCK locked@@"
mkfifo /tmp/wl
mlworkload --mib 16 --dirty-pages 64 --tick-ms 50 </tmp/wl &
wl=$!
exec 3>/tmp/wl
while read -r cmd; do
	case $cmd in
	lock)
		miglock lock --reason critical-operation --label "libvirt test" --lease 120s
		echo "@@MIGLOCK locked@@"
		;;
	unlock)
		miglock unlock
		echo "@@MIGLOCK unlocked@@"
		;;
	verify) echo verify >&3 ;;
	finish)
		echo finish >&3
		break
		;;
	esac
done
wait $wl
