#!/usr/bin/env python3
"""Medians of the runs benches/run.sh recorded, one table row per label.

    python3 benches/medians.py bench-results.jsonl
"""
import json
import statistics
import sys
from collections import defaultdict


def flatten(prefix, value, out):
    if isinstance(value, dict):
        for k, v in value.items():
            flatten(f"{prefix}.{k}" if prefix else k, v, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[prefix] = value


# The figures worth a column, by workload; others stay in the JSON file.
COLUMNS = {
    "relay": [
        ("messages_per_s", "msg/s"),
        ("server.message_per_cpu_s", "msg/CPU-s"),
        ("server.user_us_per_message", "user µs/msg"),
        ("server.system_us_per_message", "sys µs/msg"),
        ("latency_us.p50", "p50 µs"),
        ("latency_us.p99", "p99 µs"),
        ("host_steal_pct", "steal %"),
        ("errors_total", "errors"),
    ],
    "pairing": [
        ("pairings_per_s", "pairings/s"),
        ("server.pairing_per_cpu_s", "pairings/CPU-s"),
        ("server.user_us_per_pairing", "user µs"),
        ("latency_us.p50", "p50 µs"),
        ("latency_us.p99", "p99 µs"),
        ("host_steal_pct", "steal %"),
        ("errors_total", "errors"),
    ],
    "idle": [
        ("polls", "polls"),
        ("server_memory.bytes_per_poll", "B/poll"),
        ("errors_total", "errors"),
    ],
}


def main(path):
    runs = defaultdict(list)
    order = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            rec = json.loads(line)
            label = rec["label"]
            if label not in runs:
                order.append(label)
            flat = {}
            flatten("", rec["result"], flat)
            flat["workload"] = rec["result"].get("workload", "")
            runs[label].append(flat)
    for label in order:
        rs = runs[label]
        workload = rs[0]["workload"]
        cols = COLUMNS.get(workload)
        if cols is None:
            keys = [k for k in rs[0] if k != "workload"]
            cols = [(k, k) for k in keys]
        cells = []
        for key, name in cols:
            vals = [r[key] for r in rs if key in r]
            if not vals:
                continue
            if key.startswith("errors"):
                # A median would hide one bad repetition: show the worst.
                cells.append(f"{name} (max) {max(vals):,.0f}")
            else:
                cells.append(f"{name} {statistics.median(vals):,.1f}")
        print(f"{label} (n={len(rs)}): " + ", ".join(cells))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench-results.jsonl")
