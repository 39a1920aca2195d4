#!/bin/bash
# One babysit worker per array task: `sbatch --array=0-63 examples/cluster/slurm.sh`.
# Each joins the study (made by `babysit search ... --storage "$BABYSIT_STORAGE"`), runs trials
# until every stage is done, and exits 0. A pre-empted task loses only its running trial: the
# other workers re-queue it when its heartbeat is older than --stale-after seconds.
#SBATCH --job-name=babysit-worker
#SBATCH --cpus-per-task=2
#SBATCH --mem=4G
#SBATCH --time=02:00:00
#SBATCH --requeue
#SBATCH --output=logs/worker-%A_%a.out
set -euo pipefail
export BABYSIT_STORAGE="${BABYSIT_STORAGE:?set it to postgresql://user@db-host:5432/babysit}"
export PYTHONPATH="${SLURM_SUBMIT_DIR:-$PWD}/examples${PYTHONPATH:+:$PYTHONPATH}"   # the task's model module
srun babysit worker --storage "$BABYSIT_STORAGE" --study "${BABYSIT_STUDY:-babysit}" --stale-after 120
