#!/usr/bin/env bash
# Runs the comparison of BENCHMARKS.md: pairlink and nginx + Nchan, each
# pinned to core 0 with the load generator on core 1, REPS repetitions of
# every workload. Prints every JSON line to $OUT and a table of medians.
#
#   benches/run.sh [REPS]          (default 3; OUT=bench-results.jsonl)
#
# Needs: a 2-core Linux machine, taskset, python3 (for the medians), and
# root or sudo-less apt for benches/nchan/start.sh's first run.
set -euo pipefail
cd "$(dirname "$0")/.."
reps="${1:-3}"
out="${OUT:-bench-results.jsonl}"
: >"$out"
cargo build --release --bins >&2
bin=target/release/pairlink
bench=target/release/pairlink-bench
ulimit -n "$(ulimit -Hn)"

# shellcheck source=benches/common.sh
. benches/common.sh
cleanup() {
  kill_started
  [ -n "${NCHAN_PREFIX:-}" ] && benches/nchan/stop.sh "$NCHAN_PREFIX" || true
}
trap cleanup EXIT

# run LABEL ARGS...: one generator run on core 1, tagged with LABEL.
run() {
  local label="$1"; shift
  local line
  line="$(taskset -c 1 "$bench" "$@" 2>/dev/null)" || true
  [ -n "$line" ] || { echo "run $label failed" >&2; return 0; }
  printf '{"label":"%s","result":%s}\n' "$label" "$line" >>"$out"
  echo "$label: $(printf '%s' "$line" | cut -c1-160)..." >&2
}

# All three servers (pairlink, two pairlink nodes, nginx + Nchan) run on
# core 0 for the whole comparison, idle but for the one under load, and
# each repetition runs every workload against each of them in turn: a
# noisy minute on this shared host then falls on both sides of a ratio,
# not on one server's block of runs.

# --- pairlink, one node -----------------------------------------------------
taskset -c 0 "$bin" --listen 127.0.0.1:18280 --max-connections 20000 2>/dev/null &
p1=$!; pids+=("$p1"); wait_healthz 18280
sleep 0.5
# RSS, and PSS (shared pages divided among the processes that share them:
# the fair sum for nginx's master and its forked worker, whose VmRSS both
# count the pages they share).
rss_rest="$(awk '/VmRSS/ {print $2}' /proc/$p1/status)"
pss_rest="$(awk '/^Pss:/ {print $2}' /proc/$p1/smaps_rollup)"
echo "{\"label\":\"pairlink rss_at_rest_kib\",\"result\":{\"rss_kib\":$rss_rest,\"pss_kib\":$pss_rest}}" >>"$out"
u=(--url http://127.0.0.1:18280 --pid "$p1")

# --- pairlink, two nodes: side a on one, side b on the other ----------------
cookie="$(mktemp)"; head -c 32 /dev/urandom | base64 >"$cookie"
taskset -c 0 "$bin" --node n1 --listen 127.0.0.1:18281 --cluster-listen 127.0.0.1:18291 \
  --peer n2=127.0.0.1:18292 --cookie-file "$cookie" 2>/dev/null &
n1=$!; pids+=("$n1")
taskset -c 0 "$bin" --node n2 --listen 127.0.0.1:18282 --cluster-listen 127.0.0.1:18292 \
  --peer n1=127.0.0.1:18291 --cookie-file "$cookie" 2>/dev/null &
n2=$!; pids+=("$n2")
wait_healthz 18281; wait_healthz 18282
for _ in $(seq 1 100); do
  curl -s http://127.0.0.1:18281/v1/cluster | grep -q '"up"' && break
  sleep 0.05
done
x=(--url http://127.0.0.1:18281 --url http://127.0.0.1:18282 --pid "$n1" --pid "$n2")

# --- nginx + Nchan, one worker ----------------------------------------------
eval "$(NCHAN_TASKSET="taskset -c 0" benches/nchan/start.sh 18290)"
n=(--target nchan --url http://127.0.0.1:18290 --pid "$NCHAN_MASTER_PID" --pid "$NCHAN_WORKER_PID")
sleep 0.5
rss_rest="$(awk '/VmRSS/ {s+=$2} END {print s}' /proc/$NCHAN_MASTER_PID/status /proc/$NCHAN_WORKER_PID/status)"
pss_rest="$(awk '/^Pss:/ {s+=$2} END {print s}' /proc/$NCHAN_MASTER_PID/smaps_rollup /proc/$NCHAN_WORKER_PID/smaps_rollup)"
echo "{\"label\":\"nchan rss_at_rest_kib\",\"result\":{\"rss_kib\":$rss_rest,\"pss_kib\":$pss_rest}}" >>"$out"

for i in $(seq 1 "$reps"); do
  for p in 8 64 512; do
    run "pairlink relay $p" relay "${u[@]}" --pairs "$p" --duration 10s
    run "nchan relay $p" relay "${n[@]}" --pairs "$p" --duration 10s
  done
  run "pairlink-2 relay 64" relay "${x[@]}" --pairs 64 --duration 10s
  run "pairlink pairing c64" pairing "${u[@]}" --pairs 100000 --concurrency 64
  run "nchan pairing c64" pairing "${n[@]}" --pairs 100000 --concurrency 64
  run "pairlink-2 pairing c64" pairing "${x[@]}" --pairs 100000 --concurrency 64
done
kill "$p1" "$n1" "$n2"; rm -f "$cookie"
benches/nchan/stop.sh "$NCHAN_PREFIX"; NCHAN_PREFIX=""

# Idle on a fresh server each time: memory freed by earlier runs would
# otherwise be reused and hide the cost of the waiting polls.
for i in $(seq 1 "$reps"); do
  taskset -c 0 "$bin" --listen 127.0.0.1:18283 --max-connections 20000 2>/dev/null &
  pi=$!; pids+=("$pi"); wait_healthz 18283
  run "pairlink idle 10k" idle --url http://127.0.0.1:18283 --pid "$pi" --sessions 10000 --concurrency 64
  kill "$pi"; wait "$pi" 2>/dev/null || true
  eval "$(NCHAN_TASKSET="taskset -c 0" benches/nchan/start.sh 18290)"
  n=(--target nchan --url http://127.0.0.1:18290 --pid "$NCHAN_MASTER_PID" --pid "$NCHAN_WORKER_PID")
  run "nchan idle 10k" idle "${n[@]}" --sessions 10000 --concurrency 64
  benches/nchan/stop.sh "$NCHAN_PREFIX"; NCHAN_PREFIX=""
done

python3 benches/medians.py "$out"
