# Shared helpers for bench/run.sh (sourced, not run).
# Everything listens on 127.0.0.1 only; every process started here is recorded
# by PID and stopped by PID (never by name).

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
ENVOY="${ENVOY:-$BENCH/.venv/bin/envoy}"
# veer is measured as built for production: the `perf` profile (fat LTO, one codegen unit; see
# Cargo.toml). `VEER_PROFILE=release` measures what `cargo run --release` builds.
VEER_PROFILE="${VEER_PROFILE:-perf}"
# Where `cargo build --profile $VEER_PROFILE` (run from $ROOT) puts veer, CARGO_TARGET_DIR included.
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
VEER="${VEER:-$TARGET_DIR/$VEER_PROFILE/veer}"

STARTED_PIDS=()

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
now() { date +%s.%N; }

# render TEMPLATE OUT KEY=VAL... : replace @KEY@ placeholders.
render() {
    local tmpl=$1 out=$2 kv k v
    shift 2
    local args=(-e '')
    for kv in "$@"; do
        k=${kv%%=*}
        v=${kv#*=}
        args+=(-e "s|@$k@|$v|g")
    done
    sed "${args[@]}" "$tmpl" >"$out"
    if grep -qE '@[A-Z][A-Z_0-9]*@' "$out"; then
        echo "unrendered placeholder in $out: $(grep -oE '@[A-Z][A-Z_0-9]*@' "$out" | sort -u | tr '\n' ' ')" >&2
        return 1
    fi
}

# atomic_write FILE : stdin -> FILE via a temporary name (not *.yaml) and a rename,
# as editors and kubectl-style tools do, so a reader never sees half a file.
atomic_write() {
    local f=$1 dir base
    dir=$(dirname "$f")
    base=$(basename "$f")
    cat >"$dir/.$base.tmp"
    mv -f "$dir/.$base.tmp" "$f"
}

# start_bg LOGFILE CMD... : start in background, sets LAST_PID.
# With PIN set (a CPU list such as 0 or 0,1), the command runs under taskset.
start_bg() {
    local logf=$1
    shift
    if [ -n "${PIN:-}" ]; then
        taskset -c "$PIN" "$@" >"$logf" 2>&1 &
    else
        "$@" >"$logf" 2>&1 &
    fi
    LAST_PID=$!
    STARTED_PIDS+=("$LAST_PID")
}

# stop_pid PID : SIGTERM, wait up to 5 s, then SIGKILL. Only for PIDs we started.
stop_pid() {
    local pid=$1 i
    [ -n "$pid" ] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "pid $pid still running 5 s after SIGTERM; SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
}

forget_pid() { # PID : drop from STARTED_PIDS (after it was waited for)
    local keep=() p
    for p in "${STARTED_PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    STARTED_PIDS=("${keep[@]}")
}

stop_all() {
    local p
    # Newest first: proxies before the backends they talk to.
    for ((p = ${#STARTED_PIDS[@]} - 1; p >= 0; p--)); do stop_pid "${STARTED_PIDS[$p]}"; done
}

# wait_http URL [BODY_REGEX] [TRIES] [HOST] : wait until URL answers 2xx (and body matches).
wait_http() {
    local url=$1 re=${2:-.} tries=${3:-200} host=${4:-} i body hdr=()
    [ -n "$host" ] && hdr=(-H "Host: $host")
    for i in $(seq "$tries"); do
        if body=$(curl -fsS --max-time 1 "${hdr[@]}" "$url" 2>/dev/null) && grep -qE "$re" <<<"$body"; then
            return 0
        fi
        sleep 0.05
    done
    echo "timeout waiting for $url (want /$re/)" >&2
    return 1
}

# wait_port_free PORT : until nothing listens on 127.0.0.1:PORT.
wait_port_free() {
    local port=$1 i
    for i in $(seq 200); do
        ss -Hltn "sport = :$port" 2>/dev/null | grep -q . || return 0
        sleep 0.05
    done
    echo "port $port still in use" >&2
    return 1
}

# tree_pids PID : PID and its descendants (nginx master -> workers, haproxy master -> worker).
tree_pids() {
    local pid=$1 c
    echo "$pid"
    for c in $(ps -o pid= --ppid "$pid" 2>/dev/null); do tree_pids "$c"; done
}

# cpu_ticks PID : utime+stime (clock ticks) of PID and its descendants.
cpu_ticks() {
    local total=0 p rest
    for p in $(tree_pids "$1"); do
        rest=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null) || continue
        # after "pid (comm) ": state=1 ppid=2 ... utime=12 stime=13
        set -- $rest
        total=$((total + ${12} + ${13}))
    done
    echo "$total"
}

# rss_kib PID : resident set size (KiB) of PID and its descendants.
rss_kib() {
    local total=0 p v
    for p in $(tree_pids "$1"); do
        v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null) || continue
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

# start_nginx NAME RENDERED_CONF : nginx in the foreground (daemon off) with
# its own prefix dir; LAST_PID is the master.
start_nginx() {
    local name=$1 conf=$2 dir="$RUN/nginx-$1"
    mkdir -p "$dir"
    start_bg "$dir/stderr.log" nginx -p "$dir/" -e "$dir/error.log" -c "$conf"
}

record_env() { # OUTFILE
    {
        echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "kernel: $(uname -r)"
        echo "cpus: $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
        echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
        echo "virtualisation: $(systemd-detect-virt 2>/dev/null || echo unknown)"
        echo "loadavg_before: $(cut -d' ' -f1-3 /proc/loadavg)"
        echo "os: $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")"
        echo "veer: $("$VEER" --version 2>/dev/null) ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+dirty'))"
        echo "envoy: $("$ENVOY" --version 2>/dev/null | grep -o 'version: .*' | sed 's/version: //')"
        echo "haproxy: $(haproxy -v 2>/dev/null | head -1)"
        echo "nginx: $(nginx -v 2>&1 | sed 's/nginx version: //')"
        echo "wrk: $(wrk -v 2>&1 | head -1)"
        echo "h2load: $(h2load --version 2>&1 | head -1)"
        echo "python: $(python3 --version 2>&1)"
        echo "ulimit_n: $(ulimit -n)"
    } >"$1"
}
