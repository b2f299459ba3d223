#!/usr/bin/env bash
# Compares two pairlink server binaries side by side: both run at once,
# pinned to core 0, each driven by its own generator on core 1, so that
# whatever the host does to one in a round (steal, a busy neighbour on
# the same physical core) it does to the other. Each round runs a relay
# and takes B's user CPU per message over A's; the binaries swap ports
# and start order every round. Prints each round and the median ratio.
#
#   benches/ab.sh A B [ROUNDS] [PAIRS]   (defaults 16 and 512; DUR=5s)
#   PERF=1 benches/ab.sh A B [ROUNDS] [PAIRS]
#
# The user time comes from /proc/PID/stat, which this kernel samples at
# its tick (250 Hz): over a 5-second relay a few hundred samples, about
# 5 % of noise per figure on top of the host's. With PERF=1 it comes from
# `perf record -e cpu-clock:u` at 10 kHz over a 5-second window in the
# middle of an 8-second relay (messages from /metrics over the same
# window): a precise count, whose ratios spread about ±3 % a round here
# (A against itself: 0.997-1.054). Its figures are lower than /proc's
# (about 0.8 of them); compare ratios, not the two kinds of figure.
#
# Run one binary against itself first: the spread of those ratios is
# the noise to beat (on the machine of BENCHMARKS.md, 0.93-1.20 a round
# without PERF).
set -euo pipefail
if [ $# -lt 2 ] || [ ! -x "$1" ] || [ ! -x "$2" ]; then
  echo "usage: benches/ab.sh A B [ROUNDS] [PAIRS]   (A and B: server binaries)" >&2
  exit 2
fi
a="$(realpath -- "$1")"
b="$(realpath -- "$2")"
cd "$(dirname "$0")/.."
rounds="${3:-16}"
pairs="${4:-512}"
dur="${DUR:-5s}"
perf_mode="${PERF:-0}"
if [ "$perf_mode" = 1 ]; then
  command -v perf >/dev/null || { echo "PERF=1 needs perf (Debian: linux-perf)" >&2; exit 2; }
  dur=8s
fi
cargo build --release --bin pairlink-bench >&2
bench=target/release/pairlink-bench
ulimit -n "$(ulimit -Hn)"

# shellcheck source=benches/common.sh
. benches/common.sh
trap kill_started EXIT

user_us() {
  python3 -c 'import json,sys; print(json.loads(sys.argv[1])["server"]["user_us_per_message"])' "$1"
}

# relayed PORT: the server's count of relayed messages.
relayed() {
  curl -s "http://127.0.0.1:$1/metrics" | awk '/^pairlink_messages_relayed_total/ {print $2}'
}

# perf_window: records both servers' user-mode samples for 5 s in the
# middle of the relays; sets s1, s2 (samples) and m1, m2 (messages).
perf_window() {
  sleep 2.5
  local a0 b0
  a0="$(relayed 18401)"; b0="$(relayed 18402)"
  perf record -q -e cpu-clock:u -F 10000 -p "$p1" -o /tmp/pairlink-ab.perf1 -- sleep 5 >/dev/null 2>&1 &
  local q1=$!
  perf record -q -e cpu-clock:u -F 10000 -p "$p2" -o /tmp/pairlink-ab.perf2 -- sleep 5 >/dev/null 2>&1 &
  local q2=$!
  wait "$q1" "$q2" || true
  m1=$(( $(relayed 18401) - a0 )); m2=$(( $(relayed 18402) - b0 ))
  s1="$(perf script -i /tmp/pairlink-ab.perf1 -F ip 2>/dev/null | wc -l)"
  s2="$(perf script -i /tmp/pairlink-ab.perf2 -F ip 2>/dev/null | wc -l)"
}

ratios=()
for r in $(seq 1 "$rounds"); do
  if [ $((r % 2)) = 0 ]; then first="$a" second="$b"; else first="$b" second="$a"; fi
  taskset -c 0 "$first" --listen 127.0.0.1:18401 --max-connections 20000 --log-level error &
  p1=$!
  taskset -c 0 "$second" --listen 127.0.0.1:18402 --max-connections 20000 --log-level error &
  p2=$!
  pids=("$p1" "$p2")
  wait_healthz 18401
  wait_healthz 18402
  taskset -c 1 "$bench" relay --pairs "$pairs" --duration "$dur" \
    --url http://127.0.0.1:18401 --pid "$p1" >/tmp/pairlink-ab.1 2>/dev/null &
  g1=$!
  taskset -c 1 "$bench" relay --pairs "$pairs" --duration "$dur" \
    --url http://127.0.0.1:18402 --pid "$p2" >/tmp/pairlink-ab.2 2>/dev/null &
  g2=$!
  if [ "$perf_mode" = 1 ]; then perf_window; fi
  wait "$g1" || true
  wait "$g2" || true
  kill "$p1" "$p2" 2>/dev/null || true
  wait "$p1" "$p2" 2>/dev/null || true
  pids=()
  if [ "$perf_mode" = 1 ]; then
    # 10 kHz: a sample is 100 us of user time.
    u1="$(python3 -c "print(round($s1 * 100 / max($m1, 1), 3))")"
    u2="$(python3 -c "print(round($s2 * 100 / max($m2, 1), 3))")"
  else
    u1="$(user_us "$(cat /tmp/pairlink-ab.1)")"
    u2="$(user_us "$(cat /tmp/pairlink-ab.2)")"
  fi
  if [ "$first" = "$a" ]; then ua="$u1" ub="$u2"; else ua="$u2" ub="$u1"; fi
  ratio="$(python3 -c "print(round($ub / $ua, 3))")"
  ratios+=("$ratio")
  echo "round $r: A $ua us, B $ub us per message, B/A $ratio"
done
python3 -c 'import statistics,sys; v=[float(x) for x in sys.argv[1:]]; print(f"B/A user CPU per message: median {statistics.median(v):.3f}, mean {statistics.mean(v):.3f} over {len(v)} rounds")' "${ratios[@]}"
