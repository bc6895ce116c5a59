#!/usr/bin/env bash
# One benchmark scenario end to end: a fresh database, a release server on a
# random port, `loadgen` against it (extra arguments are passed on), then the
# server is stopped and the database dropped. The JSON report goes to
# standard output, with `uptime` (the machine is shared) on standard error.
#
#   cargo build --release --bin skuwatch && cargo build --release -p skuwatch-loadgen
#   bench/run.sh postgres --mode writes --skus 10000 --writers 64 --duration 30
#   bench/run.sh sqlite   --mode writes --skus 10000 --writers 64 --duration 30
#
# Environment: SKUWATCH_BENCH_POSTGRES (admin URL, default
# postgres://postgres@127.0.0.1:5432/postgres), SERVER_ENV (extra
# VAR=value pairs for the server, space separated), KEEP_DB=1 keeps the
# database and prints its URL, BEFORE_LOADGEN (a command run with $DB_URL
# and $SERVER_PID set once the server is up, e.g. to seed a large catalog
# or start an RSS sampler), HOLD_AFTER (seconds the server keeps running
# after loadgen ends), BIN_DIR (where `skuwatch` and `loadgen` are, default
# target/release; a copy of an older build measures "before" beside "after").
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN_DIR:-target/release}
backend=${1:?postgres or sqlite}
shift
admin=${SKUWATCH_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres}
name="skuwatch_bench_$$_$RANDOM"
case "$backend" in
  postgres)
    psql "$admin" -qc "CREATE DATABASE $name" >/dev/null
    db_url="${admin%/*}/$name" ;;
  sqlite)
    db_url="sqlite://${TMPDIR:-/tmp}/$name.db" ;;
  *) echo "backend must be postgres or sqlite" >&2; exit 2 ;;
esac
password="bench-$RANDOM-$RANDOM-$RANDOM"
log=$(mktemp)
# 10,000 idle sessions need as many descriptors on both ends.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cleanup() {
  [[ -n "${server_pid:-}" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  if [[ "${KEEP_DB:-0}" != 1 ]]; then
    case "$backend" in
      postgres) psql "$admin" -qc "DROP DATABASE IF EXISTS $name WITH (FORCE)" >/dev/null 2>&1 || true ;;
      sqlite) rm -f "${db_url#sqlite://}" "${db_url#sqlite://}-wal" "${db_url#sqlite://}-shm" ;;
    esac
  else
    echo "database kept: $db_url" >&2
  fi
  rm -f "$log"
}
trap cleanup EXIT
# Builds from before `skuwatch migrate` (issue 16) migrate at `serve`.
if "$bin/skuwatch" help migrate >/dev/null 2>&1; then
  DATABASE_URL="$db_url" "$bin/skuwatch" migrate >/dev/null
fi
# shellcheck disable=SC2086
env DATABASE_URL="$db_url" SKUWATCH_BIND=127.0.0.1:0 SKUWATCH_ADMIN_PASSWORD="$password" \
  SKUWATCH_JWT_SECRET="bench-secret-$RANDOM-0123456789abcdef0123456789abcdef" \
  SKUWATCH_LOG=warn ${SERVER_ENV:-} "$bin/skuwatch" serve >"$log" 2>&1 &
server_pid=$!
for _ in $(seq 1 600); do
  url=$(sed -n 's/^skuwatch listening on //p' "$log")
  [[ -n "$url" ]] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.1
done
[[ -n "$url" ]] || { echo "server did not start" >&2; cat "$log" >&2; exit 1; }
if [[ -n "${BEFORE_LOADGEN:-}" ]]; then
  DB_URL="$db_url" SERVER_PID="$server_pid" bash -c "$BEFORE_LOADGEN" >&2
fi
echo "# $(date -u +%FT%TZ) $backend; before: $(uptime)" >&2
"$bin/loadgen" --url "$url" --user admin --password "$password" --server-pid "$server_pid" "$@"
echo "# after: $(uptime)" >&2
# The soak (target 7) watches the server a while after the clients left.
sleep "${HOLD_AFTER:-0}"
echo "# server log: $(grep -c "group write failed" "$log" || true) group fallbacks, $(grep -ciE "warn|error" "$log" || true) warnings/errors" >&2
grep -iE "warn|error" "$log" | grep -v "slow statement" | head -5 >&2 || true
