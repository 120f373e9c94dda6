#!/usr/bin/env bash
# Stop the local SLURM cluster started by slurm/start.sh: cancel every job, wait for an empty queue, then end each
# daemon by the PID in its pid file (after checking that PID still runs that daemon), the nodes' slurmd first, and
# remove the /etc/hosts lines start.sh added for the nodes of a several-node cluster.
#
# Jobs go first because killing slurmd leaves running job steps alive. Nothing is killed by name. Exit status 1 if a
# cluster process is still alive at the end. Run-time files stay in $CONVIT_SLURM_DIR (the MariaDB data keeps the
# accounting history; `rm -rf` that folder for a clean slate).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

QUEUE_DRAIN_S=${CONVIT_SLURM_DRAIN_S:-60}

cancel_jobs() {
    controller_answers || { say "controller not answering: no jobs to cancel"; return 0; }
    local jobs
    jobs=$(squeue -h -o %A | sort -u | tr '\n' ' ')
    [[ -n ${jobs// /} ]] || return 0
    say "cancelling jobs: $jobs"
    # shellcheck disable=SC2086
    scancel $jobs || true
    if ! wait_for "$QUEUE_DRAIN_S" "an empty queue" bash -c '[[ -z $(squeue -h -o %A) ]]'; then
        say "warning: jobs still listed after ${QUEUE_DRAIN_S}s:"
        squeue >&2 || true
    fi
}

# TERM, then KILL after a grace period; the daemon must be ours (pid file + command name).
stop_daemon() {
    local name=$1 pid
    pid=$(daemon_pid "$name") || { say "$name not running"; return 0; }
    say "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_for 30 "$name to exit" pid_gone "$pid"; then
        say "$name (pid $pid) ignored SIGTERM: sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_for 5 "$name to die" pid_gone "$pid" || true
    fi
}

main() {
    ((EUID == 0)) || die "run as root (sudo $0)"
    hold_cluster_lock
    cancel_jobs
    local name
    for name in $(all_daemons | tac); do stop_daemon "$name"; done
    set_hosts_entries 0
    local left
    left=$(ps -o pid=,stat=,comm= -C slurmctld,slurmd,slurmstepd,slurmdbd,mariadbd,munged | awk '$2 !~ /^Z/' || true)
    if [[ -n $left ]]; then
        say "still running (not necessarily ours; check before killing anything):"
        echo "$left" >&2
        exit 1
    fi
    say "stopped; no slurm, munge or mariadb process left"
}

main "$@"
