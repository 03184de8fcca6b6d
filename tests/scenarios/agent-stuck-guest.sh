# A guest whose vCPUs stop (as a wedged kernel's would) reads nothing from
# its UART while the host keeps sending to it. The workload ticks before
# and, once the VM is forced to the destination and resumed, after.
. /lib/miglock.sh
ml_insmod
mldtest wait-channel 30000
mlworkload --mib 16 --dirty-pages 64 --tick-ms 50
