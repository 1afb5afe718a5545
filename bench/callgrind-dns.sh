#!/usr/bin/env bash
# Instructions and system calls per DNS query, veer against Knot and BIND: bench/dns.sh's zone
# and queries (dnsperf, UDP with one client, TCP with TCP_CLIENTS), one worker thread each, but
# counted rather than timed, so the figures do not drift with the machine's load. Each server
# runs under callgrind with instrumentation switched on for a warm-up, zeroed, then counts
# QUERIES queries per transport; the figure is the busiest thread's (the one that serves: veer's
# runtime worker, Knot's UDP or TCP worker, BIND's network thread), and all threads' beside it.
# System calls are counted on a second run of each server, not under valgrind, by `perf stat`
# on the syscall tracepoints over the same measured load after the same warm-up. Before that
# run's load, a sample of the queries is asked of each server and the answers (status, flags,
# sections) must be the same as Knot's, or the script fails.
#
#   bench/callgrind-dns.sh                    veer (the perf build of this tree), Knot and BIND
#   VEER=path/to/veer bench/callgrind-dns.sh  another veer binary (say, one built before a change)
#   SERVERS="veer" MODES="udp"                some of them
#   QUERIES=20000 WARM=2000 ROUTES=200 TCP_CLIENTS=8   (the defaults)
#   SYSCALLS=0                                instructions only
#   KEEP_CALLGRIND=dir                        keeps the callgrind files (dir/<server>-<mode>/, one per thread)
#
# Prints one line per server and transport: Ir/query on the serving thread and in all threads,
# then syscalls/query with the main calls per query.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$BENCH/dns-lib.sh"
: "${QUERIES:=20000}" "${WARM:=2000}" "${ROUTES:=200}" "${TCP_CLIENTS:=8}" "${SERVERS:=veer knot bind}" "${MODES:=udp tcp}"
: "${SKIP_BUILD:=0}" "${SYSCALLS:=1}" "${BENCH_PORT_BASE:=29200}"
P=$BENCH_PORT_BASE
DNS_PORT=$((P + 53)) PROXY_PORT=$((P + 10)) ADMIN_PORT=$((P + 90))

extra=()
for b in valgrind callgrind_control; do command -v "$b" >/dev/null 2>&1 || extra=(valgrind); done
dns_install "${extra[@]}"
if [ "$SKIP_BUILD" != 1 ] && [ "$VEER" = "$TARGET_DIR/$VEER_PROFILE/veer" ]; then
    (cd "$ROOT" && cargo build --profile "$VEER_PROFILE" -p veer -q)
fi

RUN=$(mktemp -d)
trap 'stop_all; rm -rf "$RUN"' EXIT
trap 'exit 130' INT TERM
dns_prepare
dns_zone_file
lines=$(wc -l <"$RUN/queries.txt")

# load MODE COUNT [CMD-PREFIX...] : about COUNT queries (whole passes over the query file);
# every one must be answered.
load() {
    local mode=$1 n=$2 clients=1 out
    shift 2
    [ "$mode" = tcp ] && clients=$TCP_CLIENTS
    out="$RUN/dnsperf-$mode-$n.txt"
    timeout 600 "$@" dnsperf -s 127.0.0.1 -p $DNS_PORT -m "$mode" -c "$clients" -t 30 \
        -n $(((n + lines - 1) / lines)) -d "$RUN/queries.txt" >"$out" 2>&1 || true
    local lost
    lost=$(awk '/Queries lost:/ {print $3}' "$out")
    [ "${lost:-x}" = 0 ] || { echo "dnsperf $mode: ${lost:-no report} queries lost" >&2; cat "$out" >&2; exit 1; }
    COMPLETED=$(awk '/Queries completed:/ {print $3}' "$out")
}

# answers SERVER : the sample's answers without what differs between two asks (id, timing)
# or two starts (the SOA serial).
answers() {
    local name type out
    awk 'NR % 20 == 1' "$RUN/queries.txt" | while read -r name type; do
        echo "== $name $type"
        out=$(kdig +time=5 +retry=0 @127.0.0.1 -p $DNS_PORT "$name" "$type")
        grep -o 'status: [A-Z]*' <<<"$out"
        # veer numbers its SOA serial from the time it starts.
        sed -n '/^;; Flags/,$p' <<<"$out" | grep -vE '^;; (Received|Time|From)|^$' | sed -E 's/(SOA\s+\S+\s+\S+\s+)[0-9]+/\1<serial>/'
    done >"$RUN/answers-$1.txt"
}

: >"$RUN/results.txt"
for s in $SERVERS; do
    # --- instructions ---
    WRAP=(valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes --callgrind-out-file="$RUN/cg-$s.%p")
    "start_$s"
    pid=$LAST_PID
    WRAP=()
    wait_dns 2400
    callgrind_control -i on "$pid" >/dev/null 2>&1
    dump=0
    for mode in $MODES; do
        load "$mode" "$WARM"
        callgrind_control -z "$pid" >/dev/null 2>&1
        load "$mode" "$QUERIES"
        n=$COMPLETED
        callgrind_control -d "$pid" >/dev/null 2>&1
        dump=$((dump + 1))
        # One file per thread for each dump (`<out>.<pid>.<dump>-<thread>`).
        read -r total busiest < <(for f in "$RUN/cg-$s.$pid.$dump"-*; do awk '/^(summary|totals):/ {print $2; exit}' "$f"; done |
            awk '{t += $1; if ($1 > m) m = $1} END {print t, m}')
        echo "$s $mode ir $((busiest / n)) $((total / n)) $n" >>"$RUN/results.txt"
        if [ -n "${KEEP_CALLGRIND:-}" ]; then mkdir -p "$KEEP_CALLGRIND/$s-$mode" && cp "$RUN/cg-$s.$pid.$dump"-* "$KEEP_CALLGRIND/$s-$mode"/; fi
    done
    stop_pid "$pid"
    wait_port_free "$DNS_PORT"

    # --- system calls, and the answers ---
    [ "$SYSCALLS" = 1 ] || continue
    "start_$s"
    pid=$LAST_PID
    wait_dns
    answers "$s"
    EVENTS=raw_syscalls:sys_enter
    for c in recvfrom sendto recvmsg sendmsg recvmmsg sendmmsg read write writev epoll_wait epoll_pwait futex; do EVENTS+=",syscalls:sys_enter_$c"; done
    for mode in $MODES; do
        load "$mode" "$WARM"
        load "$mode" "$QUERIES" perf stat -x, -o "$RUN/perf-$s-$mode.txt" -e "$EVENTS" -p "$pid" --
        awk -F, -v n="$COMPLETED" -v head="$s $mode sys" '
            $3 == "raw_syscalls:sys_enter" { total = $1 }
            $3 ~ /^syscalls:sys_enter_/ && $1 > 0 { name = substr($3, 20); parts = parts sprintf(" %s %.3f", name, $1 / n) }
            END { printf "%s %.3f%s\n", head, total / n, parts }
        ' "$RUN/perf-$s-$mode.txt" >>"$RUN/results.txt"
    done
    stop_pid "$pid"
    wait_port_free "$DNS_PORT"
done

awk '
    $3 == "ir" { printf "%-5s %s  %7d Ir/query on the serving thread, %7d in all threads (%d queries)\n", $1, $2, $4, $5, $6 }
    $3 == "sys" { printf "%-5s %s  %7.3f syscalls/query (", $1, $2, $4; for (i = 5; i < NF; i += 2) printf "%s%s %s", (i > 5 ? " " : ""), $i, $(i + 1); print ")" }
' "$RUN/results.txt"
# Every server's answers to the sample, against Knot's (the reference: the zone is loaded as is).
if [ "$SYSCALLS" = 1 ] && [ -f "$RUN/answers-knot.txt" ]; then
    bad=0
    for s in $SERVERS; do
        [ "$s" = knot ] && continue
        if ! diff -u "$RUN/answers-knot.txt" "$RUN/answers-$s.txt" >"$RUN/answers-$s.diff"; then
            echo "$s answers differently from Knot:" >&2
            cat "$RUN/answers-$s.diff" >&2
            bad=1
        fi
    done
    [ "$bad" = 0 ] && echo "answers: the same as Knot's for $(grep -c '^==' "$RUN/answers-knot.txt") sampled queries ($SERVERS)"
    [ -z "${KEEP_ANSWERS:-}" ] || cp "$RUN"/answers-*.txt "$KEEP_ANSWERS"/
    exit "$bad"
fi
