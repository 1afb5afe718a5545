#!/usr/bin/env bash
# Latency while veer reloads a large manifest set: does control-plane work stall requests?
#
#   bench/reload-scale.sh            2,000 Services x 5 endpoints, 3 x 8 s per phase
#
# veer serves `bench` (b1, b2: one nginx, as in bench/run.sh) at 64 connections (wrk -t1) with
# SERVICES x ENDPOINTS more endpoints in its manifests. Phases alternate: "quiet" (no change),
# then "reloads" (one manifest rewritten every second, so each reload parses, resolves and
# rebuilds everything). Prints p50/p99/p99.9/max per phase and the reloads veer applied.
# veer only: the peers have no equivalent of this manifest set. Loopback only, bounded in time.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

: "${SERVICES:=2000}" "${ENDPOINTS:=5}" "${REPS:=3}" "${DURATION:=8}" "${WORKERS:=1}"
: "${BENCH_PORT_BASE:=28000}"
P=$BENCH_PORT_BASE
B1_PORT=$((P + 81)) B2_PORT=$((P + 82)) B1_H2_PORT=$((P + 83)) PROXY_PORT=$((P + 10)) ADMIN_PORT=$((P + 90))
HOST=bench.default.svc.cluster.local
for b in nginx wrk curl; do command -v $b >/dev/null || { echo "needs $b (bench/run.sh installs it)" >&2; exit 1; }; done
[ -x "$VEER" ] || (cd "$ROOT" && cargo build --profile "$VEER_PROFILE" -p veer -q)

# The same ports and CPUs as bench/run.sh: one at a time.
mkdir -p "$BENCH/results"
exec 9>"$BENCH/results/.lock"
flock -n 9 || { echo "a bench run is in progress (bench/results/.lock); wait for it to finish" >&2; exit 1; }
RUN=$(mktemp -d "${TMPDIR:-/tmp}/veer-reload-scale.XXXXXX")
trap 'stop_all; rm -rf "$RUN"' EXIT
trap 'exit 130' INT TERM
mkdir -p "$RUN/manifests"
render "$BENCH/conf/backends.nginx.conf" "$RUN/backends.nginx.conf" BACKEND_WORKERS=1 B1_PORT=$B1_PORT B2_PORT=$B2_PORT B1_H2_PORT=$B1_H2_PORT
start_nginx backends "$RUN/backends.nginx.conf"
wait_http "http://127.0.0.1:$B1_PORT/" '^b1$'
render "$BENCH/conf/veer/cluster.yaml" "$RUN/manifests/cluster.yaml" LISTEN_PORT=$PROXY_PORT ADMIN_PORT=$ADMIN_PORT
render "$BENCH/conf/veer/throughput.yaml" "$RUN/manifests/throughput.yaml" B1_PORT=$B1_PORT B2_PORT=$B2_PORT

# scale GENERATION : the large manifest set (never called: addresses in 10.0.0.0/8). Two
# generations, made up front, are swapped in turn so the writer costs nothing during the load.
scale() {
    python3 - "$SERVICES" "$ENDPOINTS" "$1" <<'EOF'
import sys
services, endpoints, generation = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
out = [f"# generation {generation}"]
for s in range(services):
    out.append(f"""---
apiVersion: v1
kind: Service
metadata: {{name: svc{s}, namespace: scale}}
spec:
  selector: {{app: svc{s}}}
  ports: [{{name: http, port: 80, targetPort: http}}]""")
    for e in range(endpoints):
        n = s * endpoints + e
        out.append(f"""---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: svc{s}-{e}, namespace: scale}}
spec:
  address: 10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}
  ports: {{http: 8080}}
  labels: {{app: svc{s}}}""")
print("\n".join(out))
EOF
}
scale a >"$RUN/scale-a.yaml"
scale b >"$RUN/scale-b.yaml"
atomic_write "$RUN/manifests/scale.yaml" <"$RUN/scale-a.yaml"
log "$SERVICES services x $ENDPOINTS endpoints: $(wc -c <"$RUN/scale-a.yaml") bytes of YAML"

start_bg "$RUN/veer.log" "$VEER" run -f "$RUN/manifests" --cluster bench --listen 127.0.0.1:$PROXY_PORT --admin 127.0.0.1:$ADMIN_PORT --workers "$WORKERS"
wait_http "http://127.0.0.1:$PROXY_PORT/" '^b[12]$' 600 "$HOST"

cat >"$RUN/pct.lua" <<'EOF'
done = function(summary, latency, requests)
  io.write(string.format("%.0f %.3f %.3f %.3f %.3f\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000, latency.max / 1000))
end
EOF
reloads() { curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '/^veer_config_reloads_total\{result="ok"\}/ {s += $2} END {print s + 0}'; }
timeout 60 wrk -t1 -c64 -d2s -H "Host: $HOST" "http://127.0.0.1:$PROXY_PORT/" >/dev/null
printf '%-8s %4s %9s %8s %8s %9s %8s %8s\n' phase rep req/s p50_ms p99_ms p99.9_ms max_ms reloads
for rep in $(seq "$REPS"); do
    for phase in quiet reloads; do
        before=$(reloads)
        if [ "$phase" = reloads ]; then
            (for i in $(seq $((DURATION - 1))); do
                sleep 1
                if [ "$(head -1 "$RUN/manifests/scale.yaml")" = "# generation a" ]; then next=b; else next=a; fi
                atomic_write "$RUN/manifests/scale.yaml" <"$RUN/scale-$next.yaml"
            done) &
            writer=$!
        fi
        read -r rps p50 p99 p999 max < <(timeout 60 wrk -t1 -c64 -d"${DURATION}s" -s "$RUN/pct.lua" -H "Host: $HOST" "http://127.0.0.1:$PROXY_PORT/" | tail -1)
        [ "$phase" = reloads ] && { wait "$writer"; sleep 1; }
        printf '%-8s %4s %9s %8s %8s %9s %8s %8s\n' "$phase" "$rep" "$rps" "$p50" "$p99" "$p999" "$max" $(($(reloads) - before))
    done
done
