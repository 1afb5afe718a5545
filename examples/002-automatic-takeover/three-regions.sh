#!/usr/bin/env bash
# Seed 002's three regions on one machine, with automatic takeover: three etcd members, BIND as
# the primary of weu's zone (example.com on 127.0.0.1:5300), and three `veer run` nodes
# (aks-weu-01, aks-neu-01, aks-frc-01 on 127.0.3.11-13) reading this folder's DNSZone, whose
# takeover names aks-neu-01 as weu's standby. Everything on loopback, stopped by `down`.
#
#   three-regions.sh up            start everything (needs etcd, named, dig: apt-get install etcd-server bind9 bind9-dnsutils)
#   three-regions.sh dig           where weu's zone sends web-ns-p-prod-myapp.example.com now, and its epoch record
#   three-regions.sh kill CLUSTER  SIGKILL a node (aks-weu-01): its lease runs out, the standby takes the zone
#   three-regions.sh start CLUSTER start it again: it gets its zone back after the hold-down (30 s here)
#   three-regions.sh plan          `veer dns plan` with the lease as etcd holds it
#   three-regions.sh down          stop everything
#
# State and logs: ${VEER_TAKEOVER_DIR:-/tmp/veer-three-regions}. Run from the repository root
# after `cargo build -p veer` (or set VEER to the binary).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
EXAMPLE="$(dirname "$HERE")/002-dns-regional-takeover"
ROOT="$(cd "$HERE/../.." && pwd)"
VEER="${VEER:-$ROOT/target/debug/veer}"
DIR="${VEER_TAKEOVER_DIR:-/tmp/veer-three-regions}"
ETCD="http://127.0.0.1:2379,http://127.0.0.1:22379,http://127.0.0.1:42379"
SECRET="dmVlci10ZXN0LXRzaWcta2V5LW9mLTMyLWJ5dGVzISE="
export PATH="$PATH:/usr/sbin:/sbin"

need() { command -v "$1" >/dev/null || { echo "$1 is missing: apt-get install $2" >&2; exit 1; }; }
gateway() { case "$1" in aks-weu-01) echo 127.0.3.11 ;; aks-neu-01) echo 127.0.3.12 ;; aks-frc-01) echo 127.0.3.13 ;; *) echo "unknown cluster $1 (aks-weu-01, aks-neu-01, aks-frc-01)" >&2; exit 2 ;; esac; }

start_node() {
    local c=$1 ip
    ip=$(gateway "$c")
    "$VEER" run -f "$EXAMPLE" -f "$HERE/dnszone.yaml" --cluster "$c" --workers 1 --dns "$ip:5353" --etcd "$ETCD" \
        >"$DIR/$c.log" 2>&1 &
    echo $! >"$DIR/$c.pid"
    for _ in $(seq 100); do
        curl -fsS "http://$ip:9901/ready" >/dev/null 2>&1 && { echo "$c: gateway $ip:8080, admin $ip:9901, log $DIR/$c.log"; return; }
        sleep 0.1
    done
    echo "$c did not become ready; see $DIR/$c.log" >&2
    exit 1
}

# Stops the process whose PID file is $1 with signal $2, and waits until it is gone (SIGKILL after 5 s).
stop_pid() {
    [ -f "$1" ] || return 0
    local pid
    pid=$(cat "$1")
    rm -f "$1"
    kill "$2" "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
}

case "${1:-}" in
up)
    need etcd etcd-server; need named bind9; need dig bind9-dnsutils; need curl curl
    [ -x "$VEER" ] || (cd "$ROOT" && cargo build -p veer -q)
    [ -e "$DIR" ] && { echo "$DIR exists: run '$0 down' first" >&2; exit 1; }
    mkdir -p "$DIR"
    cluster=""
    for i in 0 1 2; do cluster+="${cluster:+,}m$i=http://127.0.0.1:$((2380 + i * 20000))"; done
    for i in 0 1 2; do
        etcd --name "m$i" --data-dir "$DIR/etcd-m$i" \
            --listen-client-urls "http://127.0.0.1:$((2379 + i * 20000))" --advertise-client-urls "http://127.0.0.1:$((2379 + i * 20000))" \
            --listen-peer-urls "http://127.0.0.1:$((2380 + i * 20000))" --initial-advertise-peer-urls "http://127.0.0.1:$((2380 + i * 20000))" \
            --initial-cluster "$cluster" --initial-cluster-token veer-three-regions \
            --heartbeat-interval 100 --election-timeout 1000 >"$DIR/etcd-m$i.log" 2>&1 &
        echo $! >"$DIR/etcd-m$i.pid"
    done
    cat >"$DIR/example.com.zone" <<EOF
\$ORIGIN example.com.
\$TTL 60
@ IN SOA ns.example.com. hostmaster.example.com. 1 60 60 600 60
@ IN NS ns.example.com.
ns IN A 127.0.0.1
EOF
    cat >"$DIR/named.conf" <<EOF
options { directory "$DIR"; listen-on port 5300 { 127.0.0.1; }; listen-on-v6 { none; };
  pid-file "$DIR/named.pid"; session-keyfile "$DIR/session.key"; managed-keys-directory "$DIR";
  recursion no; notify no; dnssec-validation no; };
controls { };
key "veer-key" { algorithm hmac-sha256; secret "$SECRET"; };
zone "example.com" { type primary; file "$DIR/example.com.zone"; allow-update { key "veer-key"; }; allow-transfer { key "veer-key"; }; };
EOF
    named -g -c "$DIR/named.conf" >"$DIR/named.log" 2>&1 &
    echo $! >"$DIR/bind.pid"
    for _ in $(seq 100); do grep -q running "$DIR/named.log" && break; sleep 0.1; done
    echo "etcd on $ETCD; BIND on 127.0.0.1:5300 (zone example.com, weu's)"
    for c in aks-weu-01 aks-neu-01 aks-frc-01; do start_node "$c"; done
    for _ in $(seq 150); do
        [ -n "$(dig +short @127.0.0.1 -p 5300 _veer-epoch.example.com TXT)" ] && break
        sleep 0.1
    done
    echo "now: $0 dig   (then: $0 kill aks-weu-01, $0 dig, $0 start aks-weu-01, $0 dig after 30 s)"
    ;;
dig)
    echo "web-ns-p-prod-myapp.example.com -> $(dig +short @127.0.0.1 -p 5300 web-ns-p-prod-myapp.example.com A | tr '\n' ' ')"
    echo "epoch record: $(dig +short @127.0.0.1 -p 5300 _veer-epoch.example.com TXT)"
    ;;
kill) stop_pid "$DIR/${2:?which cluster}.pid" -KILL; echo "killed $2: its lease runs out in 3 s" ;;
start) start_node "${2:?which cluster}" ;;
plan) "$VEER" dns plan -f "$EXAMPLE" -f "$HERE/dnszone.yaml" --etcd "$ETCD" ;;
down)
    rm -f "$DIR/named.pid" # named's own; bind.pid is the one this script started
    for p in "$DIR"/*.pid; do [ -e "$p" ] && stop_pid "$p" -TERM; done
    rm -rf "$DIR"
    echo "stopped"
    ;;
*) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
