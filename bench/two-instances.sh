#!/usr/bin/env bash
# Scale-out latency (issue 5): two release servers on one fresh PostgreSQL
# database and one Redis (a fresh key prefix), `loadgen` writing through
# instance A while its WebSocket clients watch instance B. The report's
# end-to-end latency is then write on A -> push from B.
#
#   cargo build --release --bin skuwatch && cargo build --release -p skuwatch-loadgen
#   bench/two-instances.sh --mode writes --skus 1000 --writers 8 --rate 500 --duration 20 --ws-clients 4
#
# Environment: SKUWATCH_BENCH_POSTGRES (admin URL), REDIS_URL (default
# redis://127.0.0.1:6379/0), BEFORE_LOADGEN (a command run with $DB_URL
# once both servers are up, as in bench/run.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
admin=${SKUWATCH_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres}
redis=${REDIS_URL:-redis://127.0.0.1:6379/0}
name="skuwatch_bench_$$_$RANDOM"
psql "$admin" -qc "CREATE DATABASE $name" >/dev/null
db_url="${admin%/*}/$name"
prefix="skuwatch-bench-$$-$RANDOM"
password="bench-$RANDOM-$RANDOM-$RANDOM"
secret="bench-secret-$RANDOM-0123456789abcdef0123456789abcdef"
pids=() logs=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
  psql "$admin" -qc "DROP DATABASE IF EXISTS $name WITH (FORCE)" >/dev/null 2>&1 || true
  redis-cli -u "$redis" --scan --pattern "$prefix:*" | xargs -r redis-cli -u "$redis" del >/dev/null || true
  rm -f "${logs[@]}"
}
trap cleanup EXIT
DATABASE_URL="$db_url" target/release/skuwatch migrate >/dev/null
start() {
  local log
  log=$(mktemp)
  logs+=("$log")
  env DATABASE_URL="$db_url" REDIS_URL="$redis" SKUWATCH_REDIS_PREFIX="$prefix" \
    SKUWATCH_BIND=127.0.0.1:0 SKUWATCH_ADMIN_PASSWORD="$password" SKUWATCH_JWT_SECRET="$secret" \
    SKUWATCH_LOG=warn target/release/skuwatch serve >"$log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 600); do
    url=$(sed -n 's/^skuwatch listening on //p' "$log")
    [[ -n "$url" ]] && return 0
    sleep 0.1
  done
  cat "$log" >&2
  return 1
}
start; url_a=$url
start; url_b=$url
if [[ -n "${BEFORE_LOADGEN:-}" ]]; then
  DB_URL="$db_url" bash -c "$BEFORE_LOADGEN" >&2
fi
echo "# $(date -u +%FT%TZ) A=$url_a B=$url_b; before: $(uptime)" >&2
target/release/loadgen --url "$url_a" --ws-url "$url_b" --user admin --password "$password" \
  --server-pid "${pids[1]}" "$@"
echo "# after: $(uptime)" >&2
