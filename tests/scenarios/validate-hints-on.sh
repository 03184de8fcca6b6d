# bench-hints' hot-set workload with the tracer's run-ahead, with its
# page-access trace printed at the end (the real counterpart of migsim's
# lazy-copy, against validate-hints-off).
ML_DUMP=1
. /scenarios/hints-on.sh
