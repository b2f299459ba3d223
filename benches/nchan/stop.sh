#!/usr/bin/env bash
# Stops the nginx that start.sh started and removes its directory.
#
#   benches/nchan/stop.sh /tmp/pairlink-nchan.XXXXXX
set -euo pipefail
prefix="${1:?usage: stop.sh NCHAN_PREFIX}"
case "$prefix" in
  /tmp/pairlink-nchan.*) ;;
  *) echo "stop.sh: $prefix is not a directory start.sh made" >&2; exit 2 ;;
esac
if [ -s "$prefix/nginx.pid" ]; then
  master="$(cat "$prefix/nginx.pid")"
  # QUIT: graceful; the worker finishes its requests and both exit.
  kill -QUIT "$master" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$master" 2>/dev/null || break
    sleep 0.05
  done
  if kill -0 "$master" 2>/dev/null; then
    # Long polls still open keep a graceful stop waiting: stop now.
    kill -TERM "$master" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$master" 2>/dev/null || break
      sleep 0.05
    done
  fi
fi
rm -rf "$prefix"
