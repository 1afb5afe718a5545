#!/usr/bin/env bash
# Two (or more) veer binaries side by side: HTTP/1.1 keep-alive through one worker, 64 and 1,000
# connections, wrk 6 s after a 2 s warm-up, the binaries alternating for five rounds, so the
# VM's drift falls on both. For a change to the request path, beside bench/callgrind.sh.
#
#   bench/ab.sh path/to/veer-before path/to/veer-after     prints "rep N cC binary req/s" lines
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
P=29500
B1_PORT=$((P + 81)) B2_PORT=$((P + 82)) B1_H2_PORT=$((P + 83)) PROXY_PORT=$((P + 10)) ADMIN_PORT=$((P + 90))
TPUT_HOST=bench.default.svc.cluster.local
RUN=$(mktemp -d); trap 'stop_all; rm -rf "$RUN"' EXIT
render "$BENCH/conf/backends.nginx.conf" "$RUN/backends.nginx.conf" BACKEND_WORKERS=1 B1_PORT=$B1_PORT B2_PORT=$B2_PORT B1_H2_PORT=$B1_H2_PORT
start_nginx backends "$RUN/backends.nginx.conf"; wait_http "http://127.0.0.1:$B1_PORT/" '^b1$'
mkdir -p "$RUN/m"
render "$BENCH/conf/veer/cluster.yaml" "$RUN/m/cluster.yaml" LISTEN_PORT=$PROXY_PORT ADMIN_PORT=$ADMIN_PORT
render "$BENCH/conf/veer/throughput.yaml" "$RUN/m/throughput.yaml" B1_PORT=$B1_PORT B2_PORT=$B2_PORT
for rep in 1 2 3 4 5; do
  for b in "$@"; do
    start_bg "$RUN/veer.log" "$b" run -f "$RUN/m" --cluster bench --listen "127.0.0.1:$PROXY_PORT" --admin "127.0.0.1:$ADMIN_PORT" --workers 1
    pid=$LAST_PID; wait_http "http://127.0.0.1:$PROXY_PORT/" '^b[12]$' 200 "$TPUT_HOST"
    for c in 64 1000; do
      wrk -t1 -c$c -d2s -H "Host: $TPUT_HOST" "http://127.0.0.1:$PROXY_PORT/" >/dev/null
      r=$(wrk -t1 -c$c -d6s -H "Host: $TPUT_HOST" "http://127.0.0.1:$PROXY_PORT/" | awk '/Requests\/sec/ {print $2}')
      echo "rep $rep c$c $(basename $b) $r"
    done
    stop_pid "$pid"; wait_port_free "$PROXY_PORT"
  done
done
