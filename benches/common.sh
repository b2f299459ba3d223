# Sourced by the scripts in benches/: what they share.

# The servers a script started (their pids); `kill_started` kills them.
pids=()
kill_started() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
}

# wait_healthz PORT: waits up to 5 s for a server's /healthz on PORT.
wait_healthz() {
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$1/healthz" >/dev/null && return 0
    sleep 0.05
  done
  echo "no /healthz on port $1" >&2
  return 1
}
