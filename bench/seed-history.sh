#!/usr/bin/env bash
# Seeds the chart scenario's SKU (bench/seed-history.sql) and, on a build
# with the history roll-up, waits until it has summarised every event, so
# the charts measured are the steady state. For BEFORE_LOADGEN:
#   BEFORE_LOADGEN="bench/seed-history.sh 1000000" bench/run.sh postgres --mode history --no-create
set -euo pipefail
cd "$(dirname "$0")/.."
psql -q -v ON_ERROR_STOP=1 "${DB_URL:?}" -v n="${1:-1000000}" -f bench/seed-history.sql
if psql -qtAc "SELECT 1 FROM history_rollup" "$DB_URL" >/dev/null 2>&1; then
  started=$SECONDS
  until [[ $(psql -qtAc "SELECT h.upto >= c.last_event_id FROM history_rollup h, event_clock c" "$DB_URL") == t ]]; do
    sleep 0.2
  done
  echo "history roll-up caught up in $((SECONDS - started)) s" >&2
fi
