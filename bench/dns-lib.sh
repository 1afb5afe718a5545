# Shared by bench/dns.sh and bench/callgrind-dns.sh (sourced after lib.sh, not run): the zone,
# the queries, and how veer, Knot and BIND are started on it. Needs RUN, ROUTES, DNS_PORT,
# PROXY_PORT and ADMIN_PORT set. WRAP (an array, empty by default) prefixes each server's
# command (callgrind-dns.sh runs them under valgrind).

export PATH="$PATH:/usr/sbin:/sbin"
WRAP=()

dns_install() { # installs what is missing of dnsperf, Knot, BIND, kdig and the given extra packages
    local missing=()
    command -v dnsperf >/dev/null || missing+=(dnsperf)
    command -v knotd >/dev/null || missing+=(knot)
    command -v named >/dev/null || missing+=(bind9)
    command -v kdig >/dev/null || missing+=(knot-dnsutils)
    missing+=("$@")
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        local sudo_cmd=""
        [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
        $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# dns_prepare : the manifests (seed 002's weu cluster with ROUTES ServiceRoutes), the transfer
# key ($RUN/xfr.key, its secret in SECRET) and the query file ($RUN/queries.txt).
dns_prepare() {
    mkdir -p "$RUN/manifests"
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
    local i
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
}

start_veer() {
    start_bg "$RUN/veer.log" "${WRAP[@]}" "$VEER" run -f "$RUN/manifests" --cluster aks-weu-01 --listen 127.0.0.1:$PROXY_PORT \
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
    start_bg "$RUN/knot/stderr.log" "${WRAP[@]}" knotd -c "$RUN/knot/knot.conf"
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
    start_bg "$RUN/bind/stderr.log" "${WRAP[@]}" named -g -n 1 -c "$RUN/bind/named.conf"
}
wait_dns() { # [TRIES] : until the server answers the gateway's A record (20 per second)
    local i
    for i in $(seq "${1:-200}"); do
        kdig +short +time=1 +retry=0 @127.0.0.1 -p $DNS_PORT aks01-weu-internal.example.com A 2>/dev/null | grep -q '^127.0.0.1$' && return 0
        sleep 0.05
    done
    echo "no DNS answer on port $DNS_PORT" >&2
    return 1
}

# dns_zone_file : veer's zone, transferred with TSIG, becomes $RUN/example.com.zone, the zone
# file of the peers (veer is started for it and stopped).
dns_zone_file() {
    local wrap=("${WRAP[@]}")
    WRAP=()
    start_veer
    WRAP=("${wrap[@]}")
    wait_dns
    kdig -y "hmac-sha256:bench-xfr:$SECRET" @127.0.0.1 -p $DNS_PORT example.com AXFR +nocomments +nostats |
        grep -v '^;' | grep -v '^$' | awk '$4 != "TSIG" && ($4 != "SOA" || !seen++)' >"$RUN/example.com.zone"
    # An AXFR lists the SOA first and last; the zone file wants it once.
    local records
    records=$(grep -c . "$RUN/example.com.zone")
    [ "$records" -gt $((ROUTES * 2)) ] || { echo "the transfer gave $records records" >&2; return 1; }
    stop_pid "$LAST_PID"
    wait_port_free "$DNS_PORT"
    log "$ROUTES routes: $records records in the zone, $(wc -l <"$RUN/queries.txt") distinct queries"
}
