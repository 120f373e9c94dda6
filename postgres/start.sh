#!/usr/bin/env bash
# Start a PostgreSQL server for MLflow's tracking store (see lib.sh): initialise its data folder once, start it on
# 127.0.0.1:$CONVIT_PG_PORT (default 5433), create the role and database 'mlflow' with a generated password kept in
# $CONVIT_PG_DIR/pgpass. Idempotent: a running server is left alone. Prints the store URI (no password in it) and
# how to point `convit-sweep server` at it.
#
# Environment: CONVIT_PG_DIR (default /var/tmp/convit-postgres), CONVIT_PG_PORT (default 5433).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

check_inputs() {
    ((EUID == 0)) || die "run as root (it runs the server as the 'postgres' user): sudo $0"
    getent passwd postgres >/dev/null || die "no 'postgres' user: install PostgreSQL first (apt-get install postgresql)"
    pg_bin initdb >/dev/null && pg_bin pg_ctl >/dev/null ||
        die "initdb/pg_ctl not found: install PostgreSQL first (apt-get install --no-install-recommends postgresql)"
    [[ $CONVIT_PG_DIR =~ ^/[A-Za-z0-9._/-]+$ ]] || die "CONVIT_PG_DIR='$CONVIT_PG_DIR': an absolute path of letters, digits, . _ / -"
    [[ $CONVIT_PG_PORT =~ ^[0-9]+$ ]] && ((CONVIT_PG_PORT >= 1024 && CONVIT_PG_PORT <= 65535)) ||
        die "CONVIT_PG_PORT='$CONVIT_PG_PORT': a port in 1024-65535"
}

init_data() {
    install -d -o postgres -g postgres -m 700 "$CONVIT_PG_DIR" "$PG_RUN"
    [[ -s $PG_DATA/PG_VERSION ]] && return 0
    say "initialising $PG_DATA"
    local pwfile=$CONVIT_PG_DIR/.superuser-password  # a random superuser password nobody needs (peer auth locally)
    (umask 077 && od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$pwfile")
    chown postgres:postgres "$pwfile"
    as_postgres "$(pg_bin initdb)" -D "$PG_DATA" -A scram-sha-256 --username=postgres --pwfile="$pwfile" \
        >"$CONVIT_PG_DIR/initdb.log" 2>&1 || { rm -f "$pwfile"; tail -20 "$CONVIT_PG_DIR/initdb.log" >&2; die "initdb failed"; }
    rm -f "$pwfile"
    # Local socket connections of the postgres user need no password (administration by this script only).
    sed -i 's/^local\s\+all\s\+all\s\+scram-sha-256/local all all peer/' "$PG_DATA/pg_hba.conf"
}

start_server() {
    if pg_pid >/dev/null; then
        say "already running (pid $(pg_pid))"
        return 0
    fi
    say "starting PostgreSQL on 127.0.0.1:$CONVIT_PG_PORT"
    as_postgres "$(pg_bin pg_ctl)" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -p $CONVIT_PG_PORT -c unix_socket_directories=$PG_RUN" >/dev/null ||
        { tail -20 "$PG_LOG" >&2; die "PostgreSQL did not start"; }
}

psql_admin() { as_postgres "$(pg_bin psql)" -h "$PG_RUN" -p "$CONVIT_PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }

create_database() {
    local password
    if [[ ! -s $PG_PASSFILE ]]; then
        password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
        (umask 077 && printf '127.0.0.1:%s:mlflow:mlflow:%s\n' "$CONVIT_PG_PORT" "$password" >"$PG_PASSFILE")
    fi
    password=$(cut -d: -f5 "$PG_PASSFILE")
    sed -i "s/^127.0.0.1:[0-9]*:/127.0.0.1:$CONVIT_PG_PORT:/" "$PG_PASSFILE"
    # The password goes through stdin, never on a command line or into the log.
    psql_admin <<SQL >/dev/null
SELECT 'CREATE ROLE mlflow LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mlflow')\gexec
ALTER ROLE mlflow WITH LOGIN PASSWORD '$password';
SELECT 'CREATE DATABASE mlflow OWNER mlflow' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'mlflow')\gexec
SQL
    printf 'postgresql://mlflow@127.0.0.1:%s/mlflow\n' "$CONVIT_PG_PORT" >"$PG_URI_FILE"
}

main() {
    local start=$SECONDS
    check_inputs
    init_data
    start_server
    create_database
    say "ready in $((SECONDS - start)) s (pid $(pg_pid)); data in $PG_DATA, log $PG_LOG"
    echo "  store URI:  $(<"$PG_URI_FILE")   (password in $PG_PASSFILE, read by libpq through PGPASSFILE)"
    echo "  serve it:   PGPASSFILE=$PG_PASSFILE convit-sweep server --backend-store-uri $(<"$PG_URI_FILE")"
    echo "  stop with:  postgres/stop.sh"
}

main "$@"
