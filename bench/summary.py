#!/usr/bin/env python3
"""One line per scenario of bench/compare.sh reports: the numbers the
BENCHMARKS.md table quotes. Usage: bench/summary.py before.txt after.txt"""
import json
import sys


def pick(name, d):
    s = d.get("server", {})
    lat = d.get("write_latency", {})
    out = {}
    if name in ("writes", "hot", "sqlite", "fanout"):
        out["writes/s"] = round(d.get("writes_per_s", 0))
        out["p99 ms"] = lat.get("p99_ms")
        out["cpu us/write"] = round(s.get("cpu_us_per_write", 0))
        out["errors"] = d.get("errors_by_status")
    if name == "hot":
        out["writes/commit"] = (d.get("hot") or {}).get("writes_per_commit")
        out["final ok"] = d.get("hot", d.get("stock_check"))
    if name == "fanout":
        dl = d.get("deliveries", {})
        out["deliveries/s"] = round(dl.get("per_s", 0))
        out["ratio"] = dl.get("ratio")
        out["cpu us/delivery"] = round(s.get("cpu_us_per_delivery", 0), 2)
        out["push p99 ms"] = d.get("arrival_after_2xx_latency", {}).get("p99_ms")
    if name == "idle":
        out.update({k: v for k, v in d.items() if "kib" in k or "session" in k})
    if name.startswith("cold"):
        out.update({k: v for k, v in d.items() if k not in ("mode", "config", "server", "loadgen")})
    out["load"] = d.get("load_average")
    return out


for path in sys.argv[1:]:
    print("#", path)
    for line in open(path):
        name, _, body = line.partition(" ")
        body = body.strip()
        print(name, json.dumps(pick(name, json.loads(body))) if body else "FAILED")
