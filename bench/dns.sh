#!/usr/bin/env bash
# veer's DNS server against Knot and BIND: the same zone, the same queries, dnsperf over UDP and TCP.
#
#   bench/dns.sh             3 interleaved repetitions x 10 s per server and transport
#   bench/dns.sh --quick     1 repetition x 3 s (checks the harness works)
#
# The zone is seed 002's regional zone as veer writes it for ROUTES ServiceRoutes (a CNAME and an
# ownership TXT per route, the gateway's A record, SOA, NS and glue). veer serves it from
# manifests; its TSIG-signed AXFR is the zone file Knot and BIND load, so all three serve exactly
# the same records. Queries: every route name's A (a CNAME chain inside the zone), AAAA (NODATA
# with the SOA), the ownership TXTs and a few NXDOMAINs. One worker thread each (veer --workers 1,
# Knot udp-workers/tcp-workers 1, named -n 1); response rate limiting off everywhere (Knot's and
# BIND's default). Prints queries/s per server and transport, and veer ÷ the better peer.
# Loopback only, bounded in time, every process stopped by its PID.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

QUICK=0
for a in "$@"; do
    case "$a" in
    --quick) QUICK=1 ;;
    -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $a (try --help)" >&2; exit 2 ;;
    esac
done
if [ "$QUICK" = 1 ]; then : "${REPS:=1}" "${DURATION:=3}"; else : "${REPS:=3}" "${DURATION:=10}"; fi
: "${ROUTES:=200}" "${TCP_CLIENTS:=8}" "${SERVERS:=veer knot bind}"
: "${BENCH_PORT_BASE:=28000}"
P=$BENCH_PORT_BASE
DNS_PORT=$((P + 53)) PROXY_PORT=$((P + 10)) ADMIN_PORT=$((P + 90))

# --- install and build ------------------------------------------------------------------
source "$BENCH/dns-lib.sh"
dns_install
[ -x "$VEER" ] || (cd "$ROOT" && cargo build --profile "$VEER_PROFILE" -p veer -q)

# The same ports and CPUs as bench/run.sh: one run at a time.
mkdir -p "$BENCH/results"
exec 9>"$BENCH/results/.lock"
flock -n 9 || { echo "a bench run is in progress (bench/results/.lock); wait for it to finish" >&2; exit 1; }
RUN="$BENCH/results/$(date -u +%Y%m%dT%H%M%SZ)-dns"
mkdir -p "$RUN"
trap 'stop_all' EXIT
trap 'exit 130' INT TERM

# --- the zone (seed 002's weu cluster with ROUTES ServiceRoutes) and the queries -----------
dns_prepare
# veer's zone, transferred with TSIG, is the zone file of the peers.
dns_zone_file
record_env "$RUN/env.txt"
{
    echo "knot: $(knotd --version 2>&1 | head -1)"
    echo "bind: $(named -v 2>&1 | head -1)"
    echo "dnsperf: $(dnsperf -h 2>&1 | grep -m1 -i version || true)"
} >>"$RUN/env.txt"

# --- measure ----------------------------------------------------------------------------
: >"$RUN/results.txt"
servers=($SERVERS)
for rep in $(seq "$REPS"); do
    n=${#servers[@]}
    for k in $(seq 0 $((n - 1))); do
        s=${servers[$(((k + rep - 1) % n))]}
        "start_$s"
        pid=$LAST_PID
        wait_dns
        for mode in udp tcp; do
            clients=1; [ "$mode" = tcp ] && clients=$TCP_CLIENTS
            out="$RUN/dnsperf-$s-$mode-$rep.txt"
            timeout $((DURATION + 30)) dnsperf -s 127.0.0.1 -p $DNS_PORT -m "$mode" -c "$clients" -l "$DURATION" -d "$RUN/queries.txt" >"$out" 2>&1 || true
            qps=$(awk '/Queries per second/ {print $4}' "$out")
            lost=$(awk '/Queries lost/ {print $3}' "$out")
            printf '%s %s %s %s %s\n' "$s" "$mode" "$rep" "${qps:-0}" "${lost:-?}" | tee -a "$RUN/results.txt" >&2
        done
        stop_pid "$pid"
        wait_port_free $DNS_PORT
    done
done

# --- table ------------------------------------------------------------------------------
python3 - "$RUN/results.txt" <<'EOF' | tee "$RUN/table.md"
import sys, statistics
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
qps = {}
for s, mode, rep, q, lost in rows:
    qps.setdefault((s, mode), []).append(float(q))
med = {k: statistics.median(v) for k, v in qps.items()}
print("| transport | " + " | ".join(f"{s} q/s" for s in ["veer", "knot", "bind"] if any(k[0] == s for k in med)) + " | veer ÷ better peer |")
print("|---|" + "---|" * (len({k[0] for k in med}) + 1))
for mode in ["udp", "tcp"]:
    cells = [f"{med[(s, mode)]:,.0f}" for s in ["veer", "knot", "bind"] if (s, mode) in med]
    peers = [med[(s, mode)] for s in ["knot", "bind"] if (s, mode) in med]
    ratio = f"{med[('veer', mode)] / max(peers):.2f}×" if peers and ("veer", mode) in med and max(peers) > 0 else "–"
    print(f"| {mode} | " + " | ".join(cells) + f" | {ratio} |")
EOF
log "raw outputs in ${RUN#"$ROOT"/}"
