# A guest that must survive a chain of live migrations: it writes memory
# (mlwork=MIB,PAGES,TICK_MS on the kernel command line) and verifies it
# whenever the harness types "verify". With mlmodule=1 it also runs what
# a miglock guest runs: the module on the doorbell UART and the tracer
# sending hints, so both sit across every switchover.
. /lib/miglock.sh
set -- $(sed -n 's/.*mlwork=\([0-9,]*\).*/\1/p' /proc/cmdline | tr , ' ')
[ $# = 3 ] || ml_fail "no mlwork=MIB,PAGES,TICK_MS on the command line"
if grep -q 'mlmodule=1' /proc/cmdline; then
	ml_insmod
	mldtest wait-channel 30000
	ml_tracer
fi
echo "@@MIGLOCK ready@@"
mlworkload --mib "$1" --dirty-pages "$2" --tick-ms "$3"
[ -z "${ML_TRACER:-}" ] || ml_tracer_stop
