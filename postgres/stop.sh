#!/usr/bin/env bash
# Stop the PostgreSQL server started by postgres/start.sh, by the PID in its pid file (fast shutdown: open
# transactions are rolled back, committed data is kept). The data folder stays; remove $CONVIT_PG_DIR to start over.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pid=$(pg_pid) || { say "not running"; exit 0; }
say "stopping PostgreSQL (pid $pid)"
kill -INT "$pid"
for _ in $(seq 1 120); do
    kill -0 "$pid" 2>/dev/null || { say "stopped"; exit 0; }
    sleep 0.25
done
kill -KILL "$pid" 2>/dev/null || true
say "did not stop within 30 s: killed"
