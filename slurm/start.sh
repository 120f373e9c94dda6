#!/usr/bin/env bash
# Configure and start a SLURM cluster on this machine (with real accounting) without systemd.
#
#   slurm/start.sh [--nodes N]
#
# One node (the default) is this host under its own name. N > 1 nodes are node1..nodeN: one slurmd each, in its own
# UTS namespace (`unshare --uts`; its hostname, and so every task's, is the node name), reached at its own loopback
# address 127.0.2.K on its own port 6820+K (it listens on all interfaces); /etc/hosts gets a marked line per node
# so the names resolve (stop.sh removes them). One start.sh/stop.sh at a time (a lock; a second one waits).
# Each node declares this machine's CPUs and memory (slurmd -C): N nodes oversubscribe the machine N times.
#
# Idempotent: a cluster that is already up with the same nodes is left alone (its summary is printed); daemons that
# died are started again. Configuration is rewritten only when no Slurm daemon is running, so a live cluster never
# sees its slurm.conf change under it (changing the node count needs slurm/stop.sh first). Order: mariadbd, munged,
# slurmdbd, slurmctld -c, one slurmd per node.
#
# Environment: CONVIT_SLURM_DIR (run-time folder, default /var/tmp/convit-slurm), CONVIT_SLURM_PARTITION (default
# debug), CONVIT_SLURM_MAX_TIME_MIN (partition time limit, default 60), CONVIT_SLURM_FORCE=1 (overwrite an
# /etc/slurm/slurm.conf that this script did not write), CONVIT_SLURM_NODES (same as --nodes).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# Bash 5.2 would expand "&" in ${var//pattern/replacement}: keep replacements literal.
shopt -u patsub_replacement 2>/dev/null || true

PARTITION=${CONVIT_SLURM_PARTITION:-debug}
MAX_TIME_MIN=${CONVIT_SLURM_MAX_TIME_MIN:-60}
MYCNF=$CONVIT_SLURM_DIR/etc/my.cnf
START_TIMEOUT_S=60
NODE_COUNT=${CONVIT_SLURM_NODES:-1}
NODES_FROM="CONVIT_SLURM_NODES"
MAX_NODES=16

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

parse_args() {
    while (($#)); do
        case $1 in
            --nodes) (($# >= 2)) || die "--nodes needs a number, e.g. --nodes 2"; NODE_COUNT=$2; NODES_FROM=--nodes
                shift 2 ;;
            --nodes=*) NODE_COUNT=${1#--nodes=}; NODES_FROM=--nodes; shift ;;
            -h | --help) usage; exit 0 ;;
            *) die "unknown argument '$1' (usage: slurm/start.sh [--nodes N])" ;;
        esac
    done
    # Two digits at most before any arithmetic: bash integers wrap around at 2^64.
    [[ $NODE_COUNT =~ ^[1-9][0-9]?$ ]] && ((NODE_COUNT <= MAX_NODES)) ||
        die "$NODES_FROM '$NODE_COUNT': give a whole number of nodes from 1 to $MAX_NODES"
}

# The node names this start asks for: this host's for one node, node1..nodeN for several.
wanted_nodes() {
    if ((NODE_COUNT == 1)); then
        slurmd -C | sed -n 's/^NodeName=\([^ ]*\).*/\1/p' | head -1
    else
        seq -f 'node%g' 1 "$NODE_COUNT"
    fi
}

check_inputs() {
    ((EUID == 0)) || die "run as root: the daemons run as root and configs go to /etc/slurm (sudo $0)"
    local cmd
    for cmd in slurmctld slurmd slurmdbd munged mariadbd mariadb-install-db mariadb sinfo sacct sacctmgr scontrol; do
        command -v "$cmd" >/dev/null || die "'$cmd' not found: install the packages first with slurm/install.sh"
    done
    [[ $CONVIT_SLURM_DIR =~ ^/[A-Za-z0-9._/-]+$ ]] ||
        die "CONVIT_SLURM_DIR='$CONVIT_SLURM_DIR' must be an absolute path of letters, digits, . _ / - only"
    local repo
    repo=$(cd "$SLURM_SCRIPTS_DIR/.." && pwd)
    [[ $CONVIT_SLURM_DIR/ != "$repo"/* ]] ||
        die "CONVIT_SLURM_DIR='$CONVIT_SLURM_DIR' is inside the repository; choose a folder outside $repo"
    [[ $PARTITION =~ ^[a-z][a-z0-9_-]*$ ]] || die "CONVIT_SLURM_PARTITION='$PARTITION': use lowercase letters, digits, _ -"
    [[ $MAX_TIME_MIN =~ ^[1-9][0-9]*$ ]] || die "CONVIT_SLURM_MAX_TIME_MIN='$MAX_TIME_MIN' must be a positive integer"
    local name foreign
    for name in "${SERVICES[@]}" slurmd; do
        foreign=$(foreign_pids "$name" | tr '\n' ' ')
        # A daemon that just forked into the background leaves its launcher alive for a moment: look again.
        [[ -z $foreign ]] || { sleep 3; foreign=$(foreign_pids "$name" | tr '\n' ' '); }
        [[ -z $foreign ]] || die "a $name not started by this script is running (pid ${foreign% }); stop it first"
    done
}

cluster_up() {
    local name
    [[ -n $(node_names) ]] || return 1
    for name in $(all_daemons); do is_running "$name" || return 1; done
    controller_answers
}

# Any Slurm daemon of ours running (the configuration must then stay as it is).
slurm_daemons_run() {
    local name
    for name in $(all_daemons); do
        [[ $name == slurm* ]] && is_running "$name" && return 0
    done
    return 1
}

make_dirs() {
    mkdir -p "$CONVIT_SLURM_DIR"/{etc,state,spool,log,run}
    chmod 755 "$CONVIT_SLURM_DIR"
    # munged refuses folders that others can write to; mariadbd runs as mysql and needs its own.
    install -d -o munge -g munge -m 700 "$CONVIT_SLURM_DIR/munge"
    install -d -o munge -g munge -m 755 /run/munge
    getent passwd mysql >/dev/null ||
        useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin mysql
    install -d -o mysql -g mysql -m 750 "$CONVIT_SLURM_DIR/mysql"/{,data,run,log}
    install -d -o mysql -g mysql -m 755 /run/mysqld
}

# Replace @NAME@ placeholders; values come as NAME=value arguments. Pure bash: no template engine on a bare box.
render() {
    local template=$1 out=$2 mode=$3 text pair
    shift 3
    text=$(<"$SLURM_SCRIPTS_DIR/templates/$template")
    for pair in "$@"; do text=${text//@${pair%%=*}@/${pair#*=}}; done
    [[ $text != *@[A-Z_]*@* ]] || die "unfilled placeholder in $template"
    local tmp
    tmp=$(mktemp "$out.XXXXXX")
    printf '%s\n' "$text" >"$tmp"
    chmod "$mode" "$tmp"
    mv "$tmp" "$out"
}

start_munged() {
    is_running munged && return 0
    if [[ ! -s /etc/munge/munge.key ]]; then
        say "creating /etc/munge/munge.key"
        runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
    fi
    say "starting munged"
    runuser -u munge -- munged --force --pid-file="$(pid_file munged)" --log-file="$CONVIT_SLURM_DIR/munge/munged.log" \
        9>&-
    wait_for 15 "munged (munge -n | unmunge)" bash -c 'munge -n | unmunge'
}

mariadb_query() { mariadb --defaults-file="$MYCNF" -N -B -e "$1"; }

start_mariadbd() {
    is_running mariadbd && return 0
    render my.cnf.in "$MYCNF" 644 ROOT="$CONVIT_SLURM_DIR"
    if [[ ! -d $CONVIT_SLURM_DIR/mysql/data/mysql ]]; then
        say "initialising the MariaDB data folder"
        mariadb-install-db --defaults-file="$MYCNF" --user=mysql --datadir="$CONVIT_SLURM_DIR/mysql/data" \
            --auth-root-authentication-method=socket --skip-test-db \
            >"$CONVIT_SLURM_DIR/log/mariadb-install-db.log" 2>&1 ||
            { tail -20 "$CONVIT_SLURM_DIR/log/mariadb-install-db.log" >&2; die "mariadb-install-db failed"; }
    fi
    say "starting mariadbd"
    setsid mariadbd --defaults-file="$MYCNF" </dev/null >>"$CONVIT_SLURM_DIR/log/mariadbd.out" 2>&1 9>&- &
    wait_for 30 "mariadbd (select 1)" mariadb_query 'select 1' ||
        { tail -20 "$CONVIT_SLURM_DIR/mysql/log/mariadbd.log" >&2; exit 1; }
    wait_for 10 "mariadbd pid file" is_running mariadbd
}

# The accounting database and its user. The password is made once and kept (mode 600) with the cluster's files.
setup_database() {
    local pwfile=$CONVIT_SLURM_DIR/etc/db-password
    if [[ ! -s $pwfile ]]; then
        (umask 077 && od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$pwfile")
    fi
    DB_PASSWORD=$(<"$pwfile")
    mariadb_query "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
        CREATE USER IF NOT EXISTS 'slurm'@'localhost';
        ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
}

# `slurmctld -c` restarts job ids at FirstJobId: continue after the last id in the accounting database, so that
# sacct never mixes a new job with an old one of the same id.
first_job_id() {
    local last
    last=$(mariadb_query "SELECT COALESCE(MAX(id_job), 0) FROM slurm_acct_db.${CLUSTER_NAME}_job_table" 2>/dev/null) ||
        last=0
    echo $((last + 1))
}

# RealMemory a bit below what is available now (never above what slurmd measures), so jobs asking for memory fit.
real_memory_mb() {
    local avail_kb measured
    avail_kb=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
    measured=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -1)
    local mb=$((avail_kb * 9 / 10 / 1024))
    ((mb < measured - 512)) || mb=$((measured - 512))
    echo "$mb"
}

write_slurm_configs() {
    if [[ -e $SLURM_CONF_FILE ]] && ! grep -q "$GENERATED_MARK" "$SLURM_CONF_FILE" && [[ ${CONVIT_SLURM_FORCE:-} != 1 ]]; then
        die "$SLURM_CONF_FILE exists and was not written by this script; move it away or set CONVIT_SLURM_FORCE=1"
    fi
    local node topology host memory lines="" k=0 name
    node=$(slurmd -C | head -1)
    host=$(sed -n 's/^NodeName=\([^ ]*\).*/\1/p' <<<"$node")
    [[ -n $host ]] || die "could not read the node name from 'slurmd -C': $node"
    topology=$(tr ' ' '\n' <<<"$node" | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=' |
        tr '\n' ' ')
    memory=$(real_memory_mb)
    for name in $(wanted_nodes); do
        k=$((k + 1))
        if ((NODE_COUNT == 1)); then
            lines+="NodeName=$name NodeAddr=127.0.0.1 ${topology% } RealMemory=$memory State=UNKNOWN"
        else
            lines+="NodeName=$name NodeHostname=$name NodeAddr=127.0.2.$k Port=$((6820 + k)) ${topology% }"
            lines+=" RealMemory=$memory State=UNKNOWN"$'\n'
        fi
    done
    mkdir -p /etc/slurm
    render slurm.conf.in "$SLURM_CONF_FILE" 644 ROOT="$CONVIT_SLURM_DIR" CLUSTER_NAME="$CLUSTER_NAME" HOST="$host" \
        NODE_COUNT="$NODE_COUNT" NODE_LINES="${lines%$'\n'}" NODE_LIST="$(wanted_nodes | paste -sd,)" \
        PARTITION="$PARTITION" MAX_TIME_MIN="$MAX_TIME_MIN" FIRST_JOB_ID="$(first_job_id)"
    render slurmdbd.conf.in "$SLURMDBD_CONF_FILE" 600 ROOT="$CONVIT_SLURM_DIR" DB_PASSWORD="$DB_PASSWORD"
    chown root:root "$SLURMDBD_CONF_FILE"
}

fail_with_log() {
    echo "$(basename "$0"): $1 did not come up; last lines of $2:" >&2
    tail -20 "$2" >&2 || true
    exit 1
}

start_slurm_daemons() {
    if ! is_running slurmdbd; then
        say "starting slurmdbd"
        slurmdbd 9>&-
    fi
    wait_for "$START_TIMEOUT_S" "slurmdbd (sacctmgr show cluster)" timeout 10 sacctmgr -n show cluster ||
        fail_with_log slurmdbd "$CONVIT_SLURM_DIR/log/slurmdbd.log"
    if ! is_running slurmctld; then
        say "starting slurmctld -c"
        slurmctld -c 9>&-
    fi
    wait_for "$START_TIMEOUT_S" "slurmctld (scontrol ping)" bash -c 'scontrol ping | grep -q UP' ||
        fail_with_log slurmctld "$CONVIT_SLURM_DIR/log/slurmctld.log"
    local name
    for name in $(node_names); do start_slurmd "$name"; done
    wait_for "$START_TIMEOUT_S" "$NODE_COUNT node(s) to be idle (sinfo)" nodes_up ||
        fail_with_log slurmd "$CONVIT_SLURM_DIR/log/slurmd-$(node_names | head -1).log"
    # slurmctld registers the cluster with slurmdbd by itself; sacct answers once that happened.
    wait_for "$START_TIMEOUT_S" "sacct" bash -c \
        "timeout 10 sacct -n -X -S now >/dev/null && sacctmgr -n -P show cluster format=cluster | grep -qx $CLUSTER_NAME" ||
        fail_with_log slurmctld "$CONVIT_SLURM_DIR/log/slurmctld.log"
}

# A slurmd for one node: in its own UTS namespace with the node's name as hostname when there are several nodes.
start_slurmd() {
    local name=$1
    is_running "slurmd@$name" && return 0
    mkdir -p "$CONVIT_SLURM_DIR/spool/$name"
    say "starting slurmd for $name"
    if ((NODE_COUNT == 1)); then
        slurmd 9>&-
    else
        unshare --uts bash -c 'hostname "$1" && exec slurmd -N "$1"' _ "$name" 9>&-
    fi
}

# Every node registered and usable.
nodes_up() {
    local ready
    ready=$(sinfo -h -N -o '%N %T' | awk '$2 ~ /^(idle|mixed|allocated|completing)$/' | wc -l)
    ((ready == NODE_COUNT))
}

summary() {
    local name
    echo
    echo "Local SLURM cluster '$CLUSTER_NAME' is up ($(sinfo -V))."
    for name in $(all_daemons); do printf '  %-14s pid %s\n' "$name" "$(daemon_pid "$name")"; done
    echo "  config:    $SLURM_CONF_FILE, $SLURMDBD_CONF_FILE"
    echo "  run files: $CONVIT_SLURM_DIR (logs in log/, MariaDB in mysql/)"
    sinfo -N -o '  %10N %10P %8T %6c %8m %o'
    echo "  try:       sbatch --wrap 'hostname'; squeue; sacct"
    echo "  stop with: slurm/stop.sh"
}

main() {
    local start=$SECONDS
    parse_args "$@"
    hold_cluster_lock
    check_inputs
    local running
    running=$(node_names | paste -sd, || true)
    if slurm_daemons_run && [[ $running != "$(wanted_nodes | paste -sd,)" ]]; then
        local count
        count=$(node_names | wc -l)
        die "the cluster runs with node(s) $running (slurm/start.sh --nodes $count restarts any of its daemons that" \
            "died); to start $NODE_COUNT node(s) instead, stop it first: slurm/stop.sh"
    fi
    if cluster_up; then
        say "already running"
        summary
        return 0
    fi
    make_dirs
    start_mariadbd
    setup_database
    start_munged
    if slurm_daemons_run; then
        grep -q "$GENERATED_MARK" "$SLURM_CONF_FILE" 2>/dev/null ||
            die "some Slurm daemons run but $SLURM_CONF_FILE is not ours; run slurm/stop.sh first"
        say "some daemons already run: keeping the current configuration"
    else
        write_slurm_configs
    fi
    set_hosts_entries "$NODE_COUNT"
    start_slurm_daemons
    say "started in $((SECONDS - start)) s"
    summary
}

main "$@"
