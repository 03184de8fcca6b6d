# The idle planner workload, with its page-access trace printed at the end
# (for migsim's validation against the real migration).
ML_DUMP=1
. /scenarios/plan-idle.sh
