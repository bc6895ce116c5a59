#!/usr/bin/env bash
# Prints the server's RSS (KiB) every INTERVAL seconds for SECONDS seconds,
# as "seconds_since_start rss_kib load_average": the soak's memory curve.
#   bench/rss-sampler.sh PID SECONDS [INTERVAL] > rss.txt
pid=${1:?pid}; total=${2:?seconds}; every=${3:-10}
start=$(date +%s)
while kill -0 "$pid" 2>/dev/null; do
  now=$(date +%s); t=$((now - start))
  (( t > total )) && break
  echo "$t $(awk '/VmRSS/ {print $2}' /proc/"$pid"/status) $(cut -d' ' -f1 /proc/loadavg)"
  sleep "$every"
done
