# The write-heavy planner workload, with its page-access trace printed at the end
# (for migsim's validation against the real migration or checkpoint).
ML_DUMP=1
# The workload hears a checkpoint on /dev/mld and counts the pages it
# writes while it runs (the checkpoint mode's bound on copy-on-write), and
# times its page rewrites: its stall from a migration's notice on.
ML_MLD="--mld --stalls"
. /scenarios/plan-writeheavy.sh
