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
export PATH="$PATH:/usr/sbin:/sbin"
missing=()
command -v dnsperf >/dev/null || missing+=(dnsperf)
command -v knotd >/dev/null || missing+=(knot)
command -v named >/dev/null || missing+=(bind9)
command -v kdig >/dev/null || missing+=(knot-dnsutils)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi
[ -x "$VEER" ] || (cd "$ROOT" && cargo build --profile "$VEER_PROFILE" -p veer -q)

# The same ports and CPUs as bench/run.sh: one run at a time.
mkdir -p "$BENCH/results"
exec 9>"$BENCH/results/.lock"
flock -n 9 || { echo "a bench run is in progress (bench/results/.lock); wait for it to finish" >&2; exit 1; }
RUN="$BENCH/results/$(date -u +%Y%m%dT%H%M%SZ)-dns"
mkdir -p "$RUN/manifests"
trap 'stop_all' EXIT
trap 'exit 130' INT TERM

# --- the zone: seed 002's weu cluster with ROUTES ServiceRoutes ----------------------------
python3 - "$ROUTES" "$PROXY_PORT" >"$RUN/manifests/weu.yaml" <<'EOF'
import sys
routes, port = int(sys.argv[1]), sys.argv[2]
def labelled(kind, group, name, ns, spec):
    meta = f"metadata:\n  name: {name}\n" + (f"  namespace: {ns}\n" if ns else "") + "  labels:\n    topology.istio.io/cluster: aks-weu-01\n"
    return f"apiVersion: {group}\nkind: {kind}\n{meta}spec:\n{spec}"
docs = [f"apiVersion: veer.io/v1alpha1\nkind: Cluster\nmetadata:\n  name: aks-weu-01\nspec:\n  locality:\n    region: weu\n  gateway:\n    address: 127.0.0.1:{port}\n",
    labelled("ClusterIdentity", "cluster.router.io/v1alpha1", "cluster-identity", None, "  region: weu\n  cluster: aks01\n  domain: example.com\n  environmentLetter: p\n  adoptsRegions: []\n"),
    labelled("DNSConfiguration", "cluster.router.io/v1alpha1", "dns-config", None, "  externalDNSControllers:\n  - name: external-dns-weu\n    region: weu\n"),
    labelled("Gateway", "routing.router.io/v1alpha1", "default-gateway", "istio-ingress", "  controller: aks-istio-ingressgateway-internal\n  credentialName: cert\n  targetPostfix: internal\n"),
    labelled("DNSPolicy", "routing.router.io/v1alpha1", "default", "myapp", "  mode: Active\n  sourceRegion: weu\n")]
for i in range(routes):
    docs.append(labelled("ServiceRoute", "routing.router.io/v1alpha1", f"r{i}", "myapp", f"  serviceName: r{i}\n  gatewayName: default-gateway\n  gatewayNamespace: istio-ingress\n  environment: prod\n  application: myapp\n"))
print("---\n".join(docs))
EOF
SECRET=$(head -c 32 /dev/urandom | base64)
echo "hmac-sha256:bench-xfr:$SECRET" >"$RUN/xfr.key"
{
    for i in $(seq 0 $((ROUTES - 1))); do
        echo "r$i-ns-p-prod-myapp.example.com A"
        echo "r$i-ns-p-prod-myapp.example.com AAAA"
        echo "_external-dns-owner.cname-r$i-ns-p-prod-myapp.example.com TXT"
        [ $((i % 10)) = 0 ] && echo "missing$i.example.com A"
    done
    echo "example.com SOA"
    echo "example.com NS"
    echo "aks01-weu-internal.example.com A"
} >"$RUN/queries.txt"

start_veer() {
    start_bg "$RUN/veer.log" "$VEER" run -f "$RUN/manifests" --cluster aks-weu-01 --listen 127.0.0.1:$PROXY_PORT \
        --admin 127.0.0.1:$ADMIN_PORT --workers 1 --dns 127.0.0.1:$DNS_PORT --dns-rrl-off --dns-tsig-key-file "$RUN/xfr.key"
}
start_knot() {
    mkdir -p "$RUN/knot"
    cat >"$RUN/knot/knot.conf" <<EOF
server:
  rundir: "$RUN/knot"
  listen: 127.0.0.1@$DNS_PORT
  udp-workers: 1
  tcp-workers: 1
  background-workers: 1
database:
  storage: "$RUN/knot/db"
log:
  - target: "$RUN/knot/knot.log"
    any: warning
template:
  - id: default
    storage: "$RUN"
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: example.com
    file: example.com.zone
EOF
    start_bg "$RUN/knot/stderr.log" knotd -c "$RUN/knot/knot.conf"
}
start_bind() {
    mkdir -p "$RUN/bind"
    cat >"$RUN/bind/named.conf" <<EOF
options {
  directory "$RUN/bind";
  pid-file "$RUN/bind/named.pid";
  listen-on port $DNS_PORT { 127.0.0.1; };
  listen-on-v6 { none; };
  recursion no;
  notify no;
  querylog no;
};
zone "example.com" { type primary; file "$RUN/example.com.zone"; };
EOF
    start_bg "$RUN/bind/stderr.log" named -g -n 1 -c "$RUN/bind/named.conf"
}
wait_dns() { # until the server answers the gateway's A record
    local i
    for i in $(seq 200); do
        kdig +short +time=1 +retry=0 @127.0.0.1 -p $DNS_PORT aks01-weu-internal.example.com A 2>/dev/null | grep -q '^127.0.0.1$' && return 0
        sleep 0.05
    done
    echo "no DNS answer on port $DNS_PORT" >&2
    return 1
}

# veer's zone, transferred with TSIG, is the zone file of the peers.
start_veer
wait_dns
kdig -y "hmac-sha256:bench-xfr:$SECRET" @127.0.0.1 -p $DNS_PORT example.com AXFR +nocomments +nostats \
    | grep -v '^;' | grep -v '^$' | awk '$4 != "TSIG" && ($4 != "SOA" || !seen++)' >"$RUN/example.com.zone"
# An AXFR lists the SOA first and last; the zone file wants it once.
records=$(grep -c . "$RUN/example.com.zone")
[ "$records" -gt $((ROUTES * 2)) ] || { echo "the transfer gave $records records" >&2; exit 1; }
stop_pid "$LAST_PID"
log "$ROUTES routes: $records records in the zone, $(wc -l <"$RUN/queries.txt") distinct queries"
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
