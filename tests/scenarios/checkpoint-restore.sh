# A live checkpoint of a guest that writes, and a new QEMU restored from it.
# mlworkload hears the checkpoint through /dev/mld (it counts the pages it
# wrote while it ran) and, in the restored VM, says which generation of its
# memory it runs on and verifies every page; the harness then has it verify
# again and tick on.
. /lib/miglock.sh
ml_insmod
mldtest wait-channel 30000
echo "@@MIGLOCK ready@@"
mlworkload --mib 32 --dirty-pages 256 --tick-ms 100 --mld
echo "== restored from the checkpoint:"
miglock status
