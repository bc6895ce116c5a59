#!/usr/bin/env bash
# Where PostgreSQL's CPU goes per API write: target 6's run with a
# `perf record -a -g` of 15 s in its middle, then each listed function's
# inclusive share of PostgreSQL's samples scaled to its CPU per write
# (BENCHMARKS.md, issue 16). Needs `perf` and root.
#
#   bench/pg-profile.sh [BIN_DIR] [function ...]
#   bench/pg-profile.sh target/release ExecConstraints ExecBRUpdateTriggers
set -euo pipefail
cd "$(dirname "$0")/.."
export BIN_DIR=${1:-target/release}
shift || true
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
export BEFORE_LOADGEN="psql -q \"\$DB_URL\" -v n=10000 -f bench/seed-catalog.sql; (sleep 8; perf record -q -a -g -F 499 -o $data/perf.data -- sleep 15 >/dev/null 2>&1) &"
per_write=$(bench/run.sh postgres --mode writes --no-create --skus 10000 --writers 64 --duration 30 --ws-clients 1 2>/dev/null |
  python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["writes_per_s"], d["machine"]["postgres_cpu_us_per_write"])')
read -r writes us <<<"$per_write"
echo "writes/s $writes, PostgreSQL CPU per write $us us"
perf script -i "$data/perf.data" --comm postgres -F ip,sym 2>/dev/null |
  python3 bench/per-write.py "$us" "${@:-ExecConstraints ExecBRUpdateTriggers ExecARUpdateTriggers AfterTriggerEndQuery ExecInsertIndexTuples CommitTransactionCommand}"
