#!/usr/bin/env bash
# The issue-14 comparison set, for one build: write throughput (target 1),
# hot SKU (2), fan-out (3), idle sessions (4), cold activation one at a time
# and 16 at once (5), SQLite writes (6). One JSON report per line, prefixed
# by its name, to standard output.
#
#   bench/compare.sh /path/to/before-bin > before.txt
#   bench/compare.sh target/release       > after.txt
#   bench/compare.sh target/release hot idle   (only those scenarios)
# A scenario that fails prints an empty report and the others still run.
set -uo pipefail
cd "$(dirname "$0")/.."
export BIN_DIR=${1:?directory holding skuwatch and loadgen}
shift
only=" $* "
seed() { echo "psql -q \"\$DB_URL\" -v n=$1 -f bench/seed-catalog.sql"; }
# The per-user session cap (issue 13) would refuse the benchmark's clients,
# which all log in as one admin.
many="SKUWATCH_WS_MAX_SESSIONS_PER_USER=20000"
run() {
  local name=$1; shift
  [[ "$only" == "  " || "$only" == *" $name "* ]] || return 0
  printf '%s ' "$name"
  "$@" 2>"/tmp/compare-$name.err" | tr -d '\n'
  echo
}
run writes  env BEFORE_LOADGEN="$(seed 10000)" bench/run.sh postgres --mode writes --no-create --skus 10000 --writers 64 --duration 30 --ws-clients 1
run hot     env BEFORE_LOADGEN="$(seed 1)" bench/run.sh postgres --mode hot --writers 64 --duration 20 --ws-clients 1
run fanout  env SERVER_ENV="$many" BEFORE_LOADGEN="$(seed 10000)" bench/run.sh postgres --mode writes --no-create --skus 10000 --writers 64 --rate 200 --duration 30 --ws-clients 500
run idle    env SERVER_ENV="$many" bench/run.sh postgres --mode idle --ws-clients 10000 --hold-secs 5
run cold1   env BEFORE_LOADGEN="$(seed 1000000)" bench/run.sh postgres --mode cold --no-create --skus 10000 --writers 1
run cold16  env BEFORE_LOADGEN="$(seed 1000000)" bench/run.sh postgres --mode cold --no-create --skus 10000 --writers 16
run sqlite  bench/run.sh sqlite --mode writes --skus 10000 --writers 64 --duration 30 --ws-clients 1
