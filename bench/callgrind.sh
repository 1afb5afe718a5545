#!/usr/bin/env bash
# Instructions per proxied request on veer's request path, by callgrind: HTTP/1.1 over 64
# keep-alive connections (h2load --h1) to the throughput case's two nginx backends. Counts are
# taken only between a warm-up and the end of the measured requests (callgrind_control), so the
# figure is the request path's, not start-up's. Instruction counts do not drift with the machine's
# load, which makes this the measure to compare two builds by.
#
#   bench/callgrind.sh                 the perf build of this tree
#   VEER=path/to/veer bench/callgrind.sh   another binary (say, one built before a change)
#   REQUESTS=20000 CONNS=64            the measured requests and connections (defaults)
#
# Prints one line: `<instructions per request> Ir/request (<requests> requests, <conns> conns)`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
: "${REQUESTS:=20000}" "${WARM_REQUESTS:=2000}" "${CONNS:=64}" "${SKIP_BUILD:=0}"
: "${BENCH_PORT_BASE:=29000}"
P=$BENCH_PORT_BASE
B1_PORT=$((P + 81)) B2_PORT=$((P + 82)) B1_H2_PORT=$((P + 83)) PROXY_PORT=$((P + 10)) ADMIN_PORT=$((P + 90))
TPUT_HOST=bench.default.svc.cluster.local
export PATH="$PATH:/usr/sbin:/sbin"

missing=()
for b in valgrind callgrind_control nginx h2load curl; do command -v "$b" >/dev/null 2>&1 || missing+=("$b"); done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing (missing: ${missing[*]})"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind nginx nghttp2-client curl >/dev/null
fi
if [ "$SKIP_BUILD" != 1 ] && [ "$VEER" = "$TARGET_DIR/$VEER_PROFILE/veer" ]; then
    (cd "$ROOT" && cargo build --profile "$VEER_PROFILE" -p veer -q)
fi

RUN=$(mktemp -d)
trap 'stop_all; rm -rf "$RUN"' EXIT
trap 'exit 130' INT TERM
render "$BENCH/conf/backends.nginx.conf" "$RUN/backends.nginx.conf" BACKEND_WORKERS=1 B1_PORT=$B1_PORT B2_PORT=$B2_PORT B1_H2_PORT=$B1_H2_PORT
start_nginx backends "$RUN/backends.nginx.conf"
wait_http "http://127.0.0.1:$B1_PORT/" '^b1$'
mkdir -p "$RUN/manifests"
render "$BENCH/conf/veer/cluster.yaml" "$RUN/manifests/cluster.yaml" LISTEN_PORT=$PROXY_PORT ADMIN_PORT=$ADMIN_PORT
render "$BENCH/conf/veer/throughput.yaml" "$RUN/manifests/throughput.yaml" B1_PORT=$B1_PORT B2_PORT=$B2_PORT
# One worker: callgrind runs threads one at a time anyway, and one worker's path is the figure.
start_bg "$RUN/veer.log" valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$RUN/callgrind.out.%p" \
    "$VEER" run -f "$RUN/manifests" --cluster bench --listen "127.0.0.1:$PROXY_PORT" --admin "127.0.0.1:$ADMIN_PORT" --workers 1
VG_PID=$LAST_PID
wait_http "http://127.0.0.1:$PROXY_PORT/" '^b[12]$' 2000 "$TPUT_HOST"
load() { h2load --h1 -n "$1" -c "$CONNS" -t 1 -H ":authority: $TPUT_HOST" "http://127.0.0.1:$PROXY_PORT/" >"$RUN/h2load.$1.txt" 2>&1; }
callgrind_control -i on "$VG_PID" >/dev/null
load "$WARM_REQUESTS"
callgrind_control -z "$VG_PID" >/dev/null
load "$REQUESTS"
# Every measured request must have been proxied to a backend and answered 2xx.
grep -qE "^status codes: $REQUESTS 2xx" "$RUN/h2load.$REQUESTS.txt" || { cat "$RUN/h2load.$REQUESTS.txt" >&2; exit 1; }
callgrind_control -d "$VG_PID" >/dev/null
stop_pid "$VG_PID"
# The explicit dump after the zeroing (`<out>.<pid>.1`, every thread in one file) holds exactly
# the measured requests; the final dump at exit holds what came after.
total=$(awk '/^(summary|totals):/ {print $2; exit}' "$RUN"/callgrind.out.*.1)
echo "$((total / REQUESTS)) Ir/request ($REQUESTS requests, $CONNS conns, $(basename "$VEER"); $total Ir in all)"
