#!/usr/bin/env bash
# Instructions and system calls per proxied request on veer's HTTP/2 path: h2load -c 8 -m 32
# (run.sh's tls case's HTTP/2 row) over TLS 1.3 with ALPN h2 to an HTTPS listener, or the same
# load as h2c (prior knowledge) on the plain listener, to the throughput case's two nginx
# backends. As bench/callgrind.sh: one worker, instructions counted by callgrind between a
# warm-up and the end of the measured requests, so the figure does not drift with the machine's
# load. The measured h2load opens its connections anew, so their handshakes are counted, as in
# run.sh's measured run: about 500 instructions per request for h2's 8 (1.2 M each), about
# 3,800 for HTTPS's 64 at the default count.
# System calls are counted on a second veer, not under valgrind, by `perf stat` on the
# syscall tracepoints over the same measured load after the same warm-up.
#
#   bench/callgrind-h2tls.sh                 h2 over TLS, the perf build of this tree
#   PROTO=h2c bench/callgrind-h2tls.sh       h2c: the same load without TLS
#   PROTO=h1 bench/callgrind-h2tls.sh        HTTP/1.1 as bench/callgrind.sh (64 keep-alive conns), for its syscalls
#   PROTO=https bench/callgrind-h2tls.sh     the same HTTP/1.1 load over TLS (ALPN http/1.1)
#   VEER=path/to/veer ...                    another binary (say, one built before a change)
#   REQUESTS=20000 WARM_REQUESTS=2000 CONNS=8 STREAMS=32   (the defaults; h1: CONNS=64 STREAMS=1)
#   SYSCALLS=0                               instructions only
#
# Prints `<n> Ir/request ...`, then `<n> syscalls/request ...` with the main calls per request
# (client and backend sides together; std's socket read and write are recvfrom and sendto).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
: "${PROTO:=tls}" "${REQUESTS:=20000}" "${WARM_REQUESTS:=2000}" "${SKIP_BUILD:=0}" "${SYSCALLS:=1}"
: "${BENCH_PORT_BASE:=29100}"
P=$BENCH_PORT_BASE
B1_PORT=$((P + 81)) B2_PORT=$((P + 82)) B1_H2_PORT=$((P + 83)) PROXY_PORT=$((P + 10)) TLS_PORT=$((P + 12)) ADMIN_PORT=$((P + 90))
TPUT_HOST=bench.default.svc.cluster.local
export PATH="$PATH:/usr/sbin:/sbin"
H2LOAD_ARGS=()
case "$PROTO" in
tls) URL="https://127.0.0.1:$TLS_PORT/" ;;
h2c) URL="http://127.0.0.1:$PROXY_PORT/" ;;
h1) URL="http://127.0.0.1:$PROXY_PORT/" H2LOAD_ARGS=(--h1) CONNS=${CONNS:-64} STREAMS=${STREAMS:-1} ;;
https) URL="https://127.0.0.1:$TLS_PORT/" H2LOAD_ARGS=(--h1) CONNS=${CONNS:-64} STREAMS=${STREAMS:-1} ;;
*) echo "PROTO must be tls, h2c, h1 or https, not $PROTO" >&2; exit 2 ;;
esac
: "${CONNS:=8}" "${STREAMS:=32}"

missing=()
for b in valgrind callgrind_control nginx h2load curl openssl; do command -v "$b" >/dev/null 2>&1 || missing+=("$b"); done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing (missing: ${missing[*]})"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind nginx nghttp2-client curl openssl >/dev/null
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
# run.sh's tls case: its certificate (ECDSA P-256, chain and key in one PEM file) and manifests.
mkdir -p "$RUN/manifests"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=$TPUT_HOST" -addext "subjectAltName=DNS:$TPUT_HOST" \
    -keyout "$RUN/key.pem" -out "$RUN/cert.pem" 2>"$RUN/openssl.log"
cat "$RUN/cert.pem" "$RUN/key.pem" >"$RUN/manifests/bench.pem"
render "$BENCH/conf/veer/tls-cluster.yaml" "$RUN/manifests/cluster.yaml" LISTEN_PORT=$PROXY_PORT TLS_PORT=$TLS_PORT ADMIN_PORT=$ADMIN_PORT
render "$BENCH/conf/veer/throughput.yaml" "$RUN/manifests/throughput.yaml" B1_PORT=$B1_PORT B2_PORT=$B2_PORT
render "$BENCH/conf/veer/tls-gateway.yaml" "$RUN/manifests/tls-gateway.yaml"

VEER_ARGS=(run -f "$RUN/manifests" --cluster bench --listen "127.0.0.1:$PROXY_PORT" --admin "127.0.0.1:$ADMIN_PORT" --workers 1)
wait_ready() {
    wait_http "http://127.0.0.1:$PROXY_PORT/" '^b[12]$' 2000 "$TPUT_HOST"
    local i
    for i in $(seq 2000); do
        curl -kfsS --max-time 1 --resolve "$TPUT_HOST:$TLS_PORT:127.0.0.1" "https://$TPUT_HOST:$TLS_PORT/" 2>/dev/null | grep -qE '^b[12]$' && return 0
        sleep 0.05
    done
    echo "timeout waiting for veer's HTTPS listener" >&2
    return 1
}
load() { # REQUESTS [CMD-PREFIX...]
    local n=$1
    shift
    "$@" h2load "${H2LOAD_ARGS[@]}" -n "$n" -c "$CONNS" -m "$STREAMS" -t 1 -H ":authority: $TPUT_HOST" "$URL" >"$RUN/h2load.$n.txt" 2>&1
}
# Every measured request must have been proxied to a backend and answered 2xx, over the protocol meant.
check_load() {
    grep -qE "^status codes: $REQUESTS 2xx" "$RUN/h2load.$REQUESTS.txt" || { cat "$RUN/h2load.$REQUESTS.txt" >&2; exit 1; }
    local alpn=h2
    [ "$PROTO" = https ] && alpn=http/1.1
    if [ "$PROTO" = tls ] || [ "$PROTO" = https ]; then
        grep -q "^Application protocol: $alpn" "$RUN/h2load.$REQUESTS.txt" && grep -q "^TLS Protocol: TLSv1.3" "$RUN/h2load.$REQUESTS.txt" ||
            { cat "$RUN/h2load.$REQUESTS.txt" >&2; exit 1; }
    fi
}

# One worker: callgrind runs threads one at a time anyway, and one worker's path is the figure.
start_bg "$RUN/veer.log" valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes \
    --callgrind-out-file="$RUN/callgrind.out.%p" "$VEER" "${VEER_ARGS[@]}"
VG_PID=$LAST_PID
wait_ready
callgrind_control -i on "$VG_PID" >/dev/null
load "$WARM_REQUESTS"
callgrind_control -z "$VG_PID" >/dev/null
load "$REQUESTS"
check_load
callgrind_control -d "$VG_PID" >/dev/null
stop_pid "$VG_PID"
# The explicit dump after the zeroing (`<out>.<pid>.1`, every thread in one file) holds exactly
# the measured requests; the final dump at exit holds what came after.
# One file per thread (`<out>.<pid>.1-<thread>`). The worker's is the request path; the other
# threads (the manifest watcher's polling above all) count by time, not by request, and a
# slower run gives them more, so the worker's figure is the steadier one to compare builds by.
read -r total worker < <(for f in "$RUN"/callgrind.out.*.1-*; do awk '/^(summary|totals):/ {print $2; exit}' "$f"; done |
    awk '{t += $1; if ($1 > m) m = $1} END {print t, m}')
if [ -n "${KEEP_CALLGRIND:-}" ]; then mkdir -p "$KEEP_CALLGRIND" && cp "$RUN"/callgrind.out.*.1-* "$KEEP_CALLGRIND"/; fi
echo "$((worker / REQUESTS)) Ir/request on the worker, $((total / REQUESTS)) in all threads ($PROTO, $REQUESTS requests, $CONNS conns x $STREAMS streams, $(basename "$VEER"))"

[ "$SYSCALLS" = 1 ] || exit 0
if ! command -v perf >/dev/null 2>&1 || ! perf stat -e raw_syscalls:sys_enter -- true >/dev/null 2>&1; then
    echo "syscalls/request: not counted (perf stat cannot read the syscall tracepoints here)"
    exit 0
fi
wait_port_free "$PROXY_PORT"
start_bg "$RUN/veer-perf.log" "$VEER" "${VEER_ARGS[@]}"
VEER_PID=$LAST_PID
wait_ready
load "$WARM_REQUESTS"
EVENTS=raw_syscalls:sys_enter
for s in read write writev recvfrom sendto epoll_wait futex; do EVENTS+=",syscalls:sys_enter_$s"; done
load "$REQUESTS" perf stat -x, -o "$RUN/perf.txt" -e "$EVENTS" -p "$VEER_PID" --
check_load
awk -F, -v n="$REQUESTS" '
    $3 == "raw_syscalls:sys_enter" { total = $1 }
    $3 ~ /^syscalls:sys_enter_/ { name = substr($3, 20); parts = parts sprintf(" %s %.3f", name, $1 / n) }
    END { printf "%.3f syscalls/request (%s)\n", total / n, substr(parts, 2) }
' "$RUN/perf.txt"
