#!/usr/bin/env bash
# Show what of the local SLURM cluster is up: each daemon (by pid file), the node, the queue, accounting.
# Exit status 0 when the cluster is fully up (all daemons, an answering controller, sacct), 1 otherwise.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

up=0
echo "run folder: $CONVIT_SLURM_DIR"
[[ -n $(node_names) ]] || { echo "  no nodes configured yet (start with slurm/start.sh [--nodes N])"; up=1; }
for name in $(all_daemons); do
    if pid=$(daemon_pid "$name"); then
        printf '  %-14s running (pid %s)\n' "$name" "$pid"
    else
        printf '  %-14s not running\n' "$name"
        up=1
    fi
done
if controller_answers; then
    sinfo -N -o '  %10N %10P %8T %6c %8m %o'
    echo "queue:"
    squeue -o '  %.10i %.9P %.20j %.8u %.8T %.10M %R'
    if timeout 10 sacct -n -X -S now >/dev/null 2>&1; then
        echo "accounting: sacct answers"
    else
        echo "accounting: sacct does NOT answer"
        up=1
    fi
else
    echo "controller: not answering (start with slurm/start.sh)"
    up=1
fi
exit $up
