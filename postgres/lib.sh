# Shared definitions for postgres/start.sh and stop.sh (sourced, not executed).
#
# A PostgreSQL server for the MLflow tracking server of a cluster: its own data folder outside the repository
# ($CONVIT_PG_DIR, default /var/tmp/convit-postgres), bound to 127.0.0.1 only, run as the 'postgres' user (the
# server refuses root), stopped by the PID in its own pid file. The database 'mlflow' belongs to the role 'mlflow'
# whose generated password lives only in $CONVIT_PG_DIR/pgpass (mode 600, libpq's password file format): the store
# URI carries no password, libpq reads it from the file named by PGPASSFILE.

PG_SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CONVIT_PG_DIR=${CONVIT_PG_DIR:-/var/tmp/convit-postgres}
CONVIT_PG_PORT=${CONVIT_PG_PORT:-5433}
PG_DATA=$CONVIT_PG_DIR/data
PG_RUN=$CONVIT_PG_DIR/run
PG_LOG=$CONVIT_PG_DIR/postgres.log
PG_PASSFILE=$CONVIT_PG_DIR/pgpass
PG_URI_FILE=$CONVIT_PG_DIR/mlflow-uri

die() { echo "$(basename "$0"): error: $*" >&2; exit 2; }
say() { echo "$(basename "$0"): $*"; }

pg_bin() {
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        [[ -x $dir/$1 ]] && { echo "$dir/$1"; return 0; }
    done
    command -v "$1" || return 1
}

# The postmaster's PID from its pid file (first line), if that process is a live postgres.
pg_pid() {
    local pid
    [[ -r $PG_DATA/postmaster.pid ]] || return 1
    pid=$(head -1 "$PG_DATA/postmaster.pid" | tr -dc '0-9')
    [[ -n $pid ]] || return 1
    [[ $(ps -o comm= -p "$pid" 2>/dev/null) == postgres ]] || return 1
    local stat
    stat=$(ps -o stat= -p "$pid" 2>/dev/null) || return 1
    [[ $stat != Z* ]] || return 1
    echo "$pid"
}

as_postgres() { runuser -u postgres -- "$@"; }
