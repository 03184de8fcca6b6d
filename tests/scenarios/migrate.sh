# The workload the harness live-migrates: ticks and dirties memory until the
# harness types "finish" (on the destination), then verifies every page.
/bin/mlworkload --mib 32 --dirty-pages 256 --tick-ms 100
