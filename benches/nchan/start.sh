#!/usr/bin/env bash
# Starts nginx with the Nchan module for pairlink-bench, loopback only.
#
#   benches/nchan/start.sh [PORT]        (default 8090)
#
# Installs Debian's nginx-light and libnginx-mod-nchan if missing (needs
# root). Runs one worker with its pid file, logs and temp files in a fresh
# directory under /tmp, and prints that directory and the pids:
#
#   NCHAN_PREFIX=/tmp/pairlink-nchan.XXXXXX
#   NCHAN_MASTER_PID=1234
#   NCHAN_WORKER_PID=1235
#
# so that `eval "$(benches/nchan/start.sh 8090)"` sets them in a shell. The
# same lines are kept in $NCHAN_PREFIX/env. Stop with
# `benches/nchan/stop.sh $NCHAN_PREFIX`.
#
# Pin the server to a core the same way as pairlink:
#   NCHAN_TASKSET="taskset -c 0" benches/nchan/start.sh 8090
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
port="${1:-8090}"
case "$port" in
  ''|*[!0-9]*) echo "start.sh: port must be a number, not '$port'" >&2; exit 2 ;;
esac

module=/usr/lib/nginx/modules/ngx_nchan_module.so
if ! command -v nginx >/dev/null || [ ! -f "$module" ]; then
  echo "start.sh: installing nginx-light and libnginx-mod-nchan" >&2
  apt-get update -qq >&2
  # Debian's post-install would start the system nginx on port 80 where
  # services may start; policy-rc.d (if the image has one) prevents it.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light libnginx-mod-nchan >&2
fi

# As many open files as the hard limit allows: the idle workload holds
# one socket per waiting poll.
hard="$(ulimit -Hn)"
# "unlimited" is not a value nginx or `ulimit -n` takes; the kernel's
# usual ceiling (fs.nr_open) is.
[ "$hard" = unlimited ] && hard=1048576
ulimit -n "$hard" 2>/dev/null || true
nofile="$(ulimit -n)"

prefix="$(mktemp -d /tmp/pairlink-nchan.XXXXXX)"
mkdir -p "$prefix/tmp"
if [ "$(id -u)" = 0 ]; then
  # The worker drops to nobody; it only writes request bodies that do not
  # fit in memory, under tmp/.
  user="user nobody nogroup;"
  chmod 755 "$prefix"
  chmod 1777 "$prefix/tmp"
else
  user="# not root: the worker runs as $(id -un)"
fi
sed -e "s/@PORT@/$port/g" -e "s/@NOFILE@/$nofile/g" -e "s/@USER@/$user/" \
  "$here/nginx.conf" >"$prefix/nginx.conf"

${NCHAN_TASKSET:-} nginx -p "$prefix" -c "$prefix/nginx.conf" -e "$prefix/error.log" \
  -g "daemon on;"

# The master writes its pid once the worker is forked; wait for both.
master=""
worker=""
for _ in $(seq 1 100); do
  if [ -s "$prefix/nginx.pid" ]; then
    master="$(cat "$prefix/nginx.pid")"
    worker="$(pgrep -P "$master" | head -n1 || true)"
    [ -n "$worker" ] && break
  fi
  sleep 0.05
done
if [ -z "$master" ] || [ -z "$worker" ]; then
  echo "start.sh: nginx did not start; $prefix/error.log says:" >&2
  cat "$prefix/error.log" >&2 || true
  exit 1
fi
{
  echo "NCHAN_PREFIX=$prefix"
  echo "NCHAN_MASTER_PID=$master"
  echo "NCHAN_WORKER_PID=$worker"
} | tee "$prefix/env"
