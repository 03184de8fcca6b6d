# bench-hints' hot-set workload without the run-ahead, with its page-access
# trace printed at the end (for migsim's validation of post-copy's faults
# and stall, and of lazy-copy's gain against validate-hints-on).
ML_DUMP=1
. /scenarios/hints-off.sh
