#!/usr/bin/env bash
# Smoke test of the benchmark harness, so it cannot rot silently: runs `bench/run.sh --quick`
# (installs what it needs, builds veer, a few seconds per case) and checks that the table it
# prints has a veer row with a nonzero req/s, a failover row, abuse rows for veer (quiet and
# the three attacks, each with the normal client's errors and p99) and tls rows (new connections
# with none resumed, HTTPS keep-alive, HTTP/2 over TLS); then runs a small
# bench/reload-scale.sh and checks it measured both phases. Exit 0 = harness OK.
# bench/results/latest.md is left as it was (the quick table stays in results/<stamp>-quick/).
# It checks that the harness works, not how fast veer is.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG="$(mktemp "${TMPDIR:-/tmp}/veer-bench-smoke.XXXXXX")"
# A quick run must not replace the table of the last full run: keep latest.md as it was.
KEEP="$(mktemp "${TMPDIR:-/tmp}/veer-bench-latest.XXXXXX")"
HAD_LATEST=0
if [ -f "$HERE/results/latest.md" ]; then cp "$HERE/results/latest.md" "$KEEP"; HAD_LATEST=1; fi
restore() {
    if [ "$HAD_LATEST" = 1 ]; then cp "$KEEP" "$HERE/results/latest.md"; fi
    rm -f "$LOG" "$KEEP"
}
trap restore EXIT
start=$(date +%s)
if ! "$HERE/run.sh" --quick >"$LOG" 2>&1; then
    tail -40 "$LOG" >&2
    echo "smoke: bench/run.sh --quick failed" >&2
    exit 1
fi
python3 - "$HERE/results/latest.md" <<'PY'
import re, sys
lines = open(sys.argv[1]).read().splitlines()
header = next((l for l in lines if l.startswith("| case |")), None)
if header is None:
    sys.exit("smoke: no table in " + sys.argv[1])
cols = [c.strip() for c in header.strip("|").split("|")]
if "veer" not in cols:
    sys.exit(f"smoke: no veer column in {cols}")
v = cols.index("veer")
def cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]
rows = [cells(l) for l in lines if l.startswith("| ") and not l.startswith("| case")]
rps = [r for r in rows if r[0].startswith("HTTP/1.1") and r[1].startswith("req/s")]
if not rps:
    sys.exit("smoke: no HTTP/1.1 req/s row")
m = re.match(r"([\d,.]+)", rps[0][v])
if not m or float(m.group(1).replace(",", "")) <= 0:
    sys.exit(f"smoke: veer req/s is not a positive number: {rps[0][v]!r}")
fo = [r for r in rows if r[0].startswith("failover") and r[1] == "client-visible errors"]
if not fo or not re.match(r"\d", fo[0][v]):
    sys.exit("smoke: no failover result for veer")
ab = {r[1].split(":")[0]: r[v] for r in rows if r[0].startswith("abuse")}
for phase in ("quiet", "idle h2c", "slowloris", "malformed"):
    cell = next((c for k, c in ab.items() if phase in k), None)
    if cell is None or not re.match(r"\d+; [\d.]+ / [\d.,]+", cell):
        sys.exit(f"smoke: no abuse result ({phase}) for veer: {ab}")
# The tls case: veer served new TLS connections (none resumed), HTTPS keep-alive and HTTP/2 over TLS.
tls = {(r[0].split(",")[0], r[1]): r[v] for r in rows if r[0].startswith(("TLS new", "HTTPS keep-alive", "HTTP/2 over TLS"))}
for key in (("TLS new connections (full handshake + 1 request each", "connections/s"), ("HTTPS keep-alive (HTTP/1.1)", "req/s"),
            ("HTTP/2 over TLS", "req/s")):
    cell = tls.get(key)
    if cell is None or not re.match(r"[\d,.]+", cell) or float(re.match(r"([\d,.]+)", cell).group(1).replace(",", "")) <= 0:
        sys.exit(f"smoke: no tls result {key} for veer: {cell!r}")
resumed = tls.get(("TLS new connections (full handshake + 1 request each", "negotiated; sessions resumed"), "")
if not resumed.endswith("; 0 resumed"):
    sys.exit(f"smoke: the handshake client resumed sessions or said nothing: {resumed!r}")
print(f"smoke: ok (veer {rps[0][v]} req/s; failover errors {fo[0][v]}; abuse quiet {ab.get('quiet')}; "
      f"tls {tls[('TLS new connections (full handshake + 1 request each', 'connections/s')]} conn/s)")
PY
# The reload-at-scale script, small: both phases measured and the reloads applied.
if ! SERVICES=200 REPS=1 DURATION=3 "$HERE/reload-scale.sh" >"$LOG" 2>&1; then
    tail -20 "$LOG" >&2
    echo "smoke: bench/reload-scale.sh failed" >&2
    exit 1
fi
awk '$1 == "quiet" && $3 > 0 {q = 1} $1 == "reloads" && $3 > 0 && $8 > 0 {r = 1} END {exit !(q && r)}' "$LOG" \
    || { cat "$LOG" >&2; echo "smoke: reload-scale.sh printed no quiet and reload phases with requests and reloads" >&2; exit 1; }
echo "smoke: reload-scale ok ($(awk '$1 == "reloads" {print $8}' "$LOG") reloads applied)"
echo "smoke: $(($(date +%s) - start)) s"
