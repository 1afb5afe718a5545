#!/usr/bin/env python3
"""Records the harness's measurements as JSON lines and prints the one results table.

record KIND FILE key=value...   parse FILE (wrk or h2load output, or a JSON summary from
                                probe.py / the memory case) and append one JSON line, with
                                the key=value tags, to --out
table RESULTS ENV               print the markdown table (medians over repetitions, ratios
                                to direct and to the best peer) and the notes under it
"""
import argparse
import json
import re
import statistics
import sys

PROXIES = ["direct", "veer", "envoy", "haproxy", "nginx"]
PEERS = ["envoy", "haproxy", "nginx"]
TITLES = {"direct": "direct (no proxy)", "veer": "veer", "envoy": "Envoy", "haproxy": "HAProxy", "nginx": "nginx"}
UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def to_ms(v):
    m = re.match(r"([\d.]+)(us|ms|s)$", v)
    return float(m.group(1)) * UNIT_MS[m.group(2)]


def parse_wrk(text):
    r = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))}
    for q in ("50", "99"):
        r["p" + q + "_ms"] = to_ms(re.search(rf"^\s+{q}%\s+(\S+)", text, re.M).group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    r["sock_errors"] = sum(int(x) for x in m.groups()) if m else 0
    r["requests"] = int(re.search(r"(\d+) requests in", text).group(1))
    return r


def parse_h2load(text):
    r = {"rps": float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", text).group(1))}
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", text)
    r["requests"] = int(m.group(4))
    r["failed"] = int(m.group(5)) + int(m.group(6)) + int(m.group(7))
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    r["non2xx"] = int(m.group(2)) + int(m.group(3)) + int(m.group(4))
    m = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", text)
    r["min_ms"], r["max_ms"], r["mean_ms"] = to_ms(m.group(1)), to_ms(m.group(2)), to_ms(m.group(3))
    # Over TLS, what the server chose.
    for key, label in (("tls_version", "TLS Protocol"), ("cipher", "Cipher"), ("group", "Server Temp Key"), ("alpn", "Application protocol")):
        m = re.search(rf"^{label}: (.+)$", text, re.M)
        if m:
            r[key] = m.group(1).strip()
    return r


def record(args):
    text = open(args.file).read()
    if args.kind == "wrk":
        rec = parse_wrk(text)
    elif args.kind == "h2load":
        rec = parse_h2load(text)
    else:
        rec = {}
        for line in text.splitlines():
            if line.strip().startswith("{"):
                rec.update(json.loads(line))
    for kv in args.tags:
        k, v = kv.split("=", 1)
        if k in ("case", "proxy", "mode"):
            rec[k] = v
            continue
        try:
            v = int(v)
        except ValueError:
            try:
                v = float(v)
            except ValueError:
                pass
        rec[k] = v
    if "cpu_ticks" in rec and rec.get("requests"):
        rec["cpu_us_per_req"] = rec["cpu_ticks"] * 1e6 / args.hz / rec["requests"]
    with open(args.out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    return rec


# --- the table -------------------------------------------------------------------------


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def fmt_num(v, digits=None):
    if v is None:
        return "–"
    if digits is None:
        digits = 0 if abs(v) >= 100 else 1 if abs(v) >= 10 else 2
    s = f"{v:,.{digits}f}"
    return s


def fmt_range(vals, digits=None):
    """median, and (min–max) when the repetitions disagree."""
    vals = [v for v in vals if v is not None]
    if not vals:
        return "–"
    m = fmt_num(statistics.median(vals), digits)
    lo, hi = min(vals), max(vals)
    if len(vals) > 1 and lo != hi:
        return f"{m} ({fmt_num(lo, digits)}–{fmt_num(hi, digits)})"
    return m


class Table:
    def __init__(self, recs):
        self.recs = recs
        self.rows = []

    def sel(self, **tags):
        return [r for r in self.recs if all(r.get(k) == v for k, v in tags.items())]

    def add(self, case, metric, cells, verdict):
        self.rows.append((case, metric, cells, verdict))

    def per_proxy(self, tags, fn):
        """{proxy: fn(records of that proxy)} for proxies with records."""
        out = {}
        for p in PROXIES:
            rs = self.sel(proxy=p, **tags)
            if rs:
                out[p] = fn(rs)
        return out


def ratio_verdict(veer, peers, higher_better):
    peers = {k: v for k, v in peers.items() if v is not None}
    if veer is None or not peers:
        return "–"
    best_name, best = (max if higher_better else min)(peers.items(), key=lambda kv: kv[1])
    if best == 0 or veer == 0:
        if veer == best:
            return f"= best ({TITLES[best_name]})"
        return f"{fmt_num(veer, 0)} vs {fmt_num(best, 0)} ({TITLES[best_name]})"
    return f"{veer / best:.2f}× {TITLES[best_name]}"


def count_verdict(veer, peers):
    peers = {k: v for k, v in peers.items() if v is not None}
    if veer is None or not peers:
        return "–"
    best_name, best = min(peers.items(), key=lambda kv: kv[1])
    if veer < best:
        return f"better (best peer {fmt_num(best, 0)}, {TITLES[best_name]})"
    if veer == best:
        return f"= best ({TITLES[best_name]})"
    return f"worse (best peer {fmt_num(best, 0)}, {TITLES[best_name]})"


def tls_rows(t, recs):
    """The tls case: new connections (a full handshake each), HTTPS keep-alive, HTTP/2 over TLS."""
    def wk(w):
        return f"{w} worker{'s' if w > 1 else ''}"

    def rps_cells(tags, err):
        rps = t.per_proxy(tags, lambda rs: med([r["rps"] for r in rs]))
        cells = {}
        for p, rs in t.per_proxy(tags, lambda rs: rs).items():
            errs = sum(err(r) for r in rs)
            cells[p] = fmt_range([r["rps"] for r in rs]) + (f" [{errs:,} errors]" if errs else "")
        return rps, cells

    def cpu_row(case, tags, metric):
        cpu = t.per_proxy(tags, lambda rs: med([r.get("cpu_us_per_req") for r in rs]))
        if any(v is not None for v in cpu.values()):
            t.add(case, metric, {p: fmt_num(v, 1) for p, v in cpu.items()},
                  ratio_verdict(cpu.get("veer"), {p: cpu.get(p) for p in PEERS}, False))

    def top(rs, key):
        counts = {}
        for r in rs:
            for k, v in (r.get(key) or {}).items():
                counts[k] = counts.get(k, 0) + v
        return "/".join(k for k, _ in sorted(counts.items(), key=lambda kv: -kv[1])) or "–"

    for workers in sorted({r["workers"] for r in recs if r.get("case") == "tls_hs"}):
        tags = {"case": "tls_hs", "workers": workers}
        any_rec = t.sel(**tags)[0]
        case = f"TLS new connections (full handshake + 1 request each, {any_rec.get('clients')} clients), {wk(workers)}"
        rps, cells = rps_cells(tags, lambda r: r["errors"])
        t.add(case, "connections/s", cells, ratio_verdict(rps.get("veer"), {p: rps.get(p) for p in PEERS}, True))
        p50 = t.per_proxy(tags, lambda rs: med([r["p50_ms"] for r in rs]))
        p99 = t.per_proxy(tags, lambda rs: med([r["p99_ms"] for r in rs]))
        t.add(case, "p50 / p99 connect to whole answer, ms", {p: f"{fmt_num(p50[p])} / {fmt_num(p99[p])}" for p in p50},
              "p99 " + ratio_verdict(p99.get("veer"), {p: p99.get(p) for p in PEERS}, False))
        cpu_row(case, tags, "proxy CPU µs per connection (handshake + request)")
        t.add(case, "negotiated; sessions resumed", t.per_proxy(
            tags, lambda rs: f"{top(rs, 'versions')} {top(rs, 'ciphers')} {top(rs, 'alpn')}; {sum(r['reused'] for r in rs):,} resumed"), "–")
    for conns, workers in sorted({(r["conns"], r["workers"]) for r in recs if r.get("case") == "tls_h1"}, key=lambda x: (x[1], x[0])):
        tags = {"case": "tls_h1", "conns": conns, "workers": workers}
        case = f"HTTPS keep-alive (HTTP/1.1), {conns:,} conns, {wk(workers)}"
        rps, cells = rps_cells(tags, lambda r: r["non2xx"] + r["sock_errors"])
        t.add(case, "req/s", cells, ratio_verdict(rps.get("veer"), {p: rps.get(p) for p in PEERS}, True))
        p50 = t.per_proxy(tags, lambda rs: med([r["p50_ms"] for r in rs]))
        p99 = t.per_proxy(tags, lambda rs: med([r["p99_ms"] for r in rs]))
        t.add(case, "p50 / p99 latency, ms", {p: f"{fmt_num(p50[p])} / {fmt_num(p99[p])}" for p in p50},
              "p99 " + ratio_verdict(p99.get("veer"), {p: p99.get(p) for p in PEERS}, False))
        cpu_row(case, tags, "proxy CPU µs per request")
    for workers, clients, streams in sorted({(r["workers"], r["h2_clients"], r["h2_streams"]) for r in recs if r.get("case") == "tls_h2"}):
        tags = {"case": "tls_h2", "workers": workers}
        case = f"HTTP/2 over TLS, {clients} conns × {streams} streams, {wk(workers)}"
        rps, cells = rps_cells(tags, lambda r: r["non2xx"] + r["failed"])
        t.add(case, "req/s", cells, ratio_verdict(rps.get("veer"), {p: rps.get(p) for p in PEERS}, True))
        mean = t.per_proxy(tags, lambda rs: med([r["mean_ms"] for r in rs]))
        mx = t.per_proxy(tags, lambda rs: med([r["max_ms"] for r in rs]))
        t.add(case, "mean / max latency, ms", {p: f"{fmt_num(mean[p])} / {fmt_num(mx[p])}" for p in mean},
              "mean " + ratio_verdict(mean.get("veer"), {p: mean.get(p) for p in PEERS}, False))
        cpu_row(case, tags, "proxy CPU µs per request")
        t.add(case, "negotiated (h2load)", t.per_proxy(
            tags, lambda rs: f"{rs[0].get('tls_version', '?')} {rs[0].get('cipher', '?')} {rs[0].get('group', '?')} {rs[0].get('alpn', '?')}"), "–")


def build_rows(recs):
    t = Table(recs)
    # Throughput, HTTP/1.1 (wrk) and HTTP/2 (h2load).
    h1 = sorted({(r["conns"], r["workers"]) for r in recs if r.get("case") == "h1"}, key=lambda x: (x[1], x[0]))
    for conns, workers in h1:
        tags = {"case": "h1", "conns": conns, "workers": workers}
        case = f"HTTP/1.1 keep-alive, {conns:,} conns, {workers} worker{'s' if workers > 1 else ''}"
        rps = t.per_proxy(tags, lambda rs: med([r["rps"] for r in rs]))
        base = rps.get("direct")
        cells = {}
        for p, rs in t.per_proxy(tags, lambda rs: rs).items():
            v = rps[p]
            errs = sum(r["non2xx"] + r["sock_errors"] for r in rs)
            cell = fmt_num(v)
            if base and p != "direct":
                cell += f" ({v / base:.2f}×)"
            if errs:
                cell += f" [{errs:,} errors]"
            cells[p] = cell
        t.add(case, "req/s (× direct)", cells, ratio_verdict(rps.get("veer"), {p: rps.get(p) for p in PEERS}, True))
        p50 = t.per_proxy(tags, lambda rs: med([r["p50_ms"] for r in rs]))
        p99 = t.per_proxy(tags, lambda rs: med([r["p99_ms"] for r in rs]))
        t.add(case, "p50 / p99 latency, ms", {p: f"{fmt_num(p50[p])} / {fmt_num(p99[p])}" for p in p50},
              "p99 " + ratio_verdict(p99.get("veer"), {p: p99.get(p) for p in PEERS}, False))
        cpu = t.per_proxy(tags, lambda rs: med([r.get("cpu_us_per_req") for r in rs]))
        cpu.pop("direct", None)
        if any(v is not None for v in cpu.values()):
            t.add(case, "proxy CPU µs per request", {p: fmt_num(v, 1) for p, v in cpu.items()},
                  ratio_verdict(cpu.get("veer"), {p: cpu.get(p) for p in PEERS}, False))
    h2 = sorted({(r["workers"], r["h2_clients"], r["h2_streams"]) for r in recs if r.get("case") == "h2"})
    for workers, clients, streams in h2:
        tags = {"case": "h2", "workers": workers}
        case = f"HTTP/2 h2c, {clients} conns × {streams} streams, {workers} worker{'s' if workers > 1 else ''}"
        rps = t.per_proxy(tags, lambda rs: med([r["rps"] for r in rs]))
        base = rps.get("direct")
        cells = {}
        for p, rs in t.per_proxy(tags, lambda rs: rs).items():
            v = rps[p]
            errs = sum(r["non2xx"] + r["failed"] for r in rs)
            cell = fmt_num(v)
            if base and p != "direct":
                cell += f" ({v / base:.2f}×)"
            if errs:
                cell += f" [{errs:,} errors]"
            cells[p] = cell
        t.add(case, "req/s (× direct)", cells, ratio_verdict(rps.get("veer"), {p: rps.get(p) for p in PEERS}, True))
        mean = t.per_proxy(tags, lambda rs: med([r["mean_ms"] for r in rs]))
        mx = t.per_proxy(tags, lambda rs: med([r["max_ms"] for r in rs]))
        t.add(case, "mean / max latency, ms", {p: f"{fmt_num(mean[p])} / {fmt_num(mx[p])}" for p in mean},
              "mean " + ratio_verdict(mean.get("veer"), {p: mean.get(p) for p in PEERS}, False))
    tls_rows(t, recs)
    # Failover.
    names = {"stop": "primary stopped (refused)", "503": "primary answers 503", "blackhole": "primary blackholed"}
    for r in recs:
        if "mode" in r:
            r["mode"] = str(r["mode"])
    modes = [m for m in ("stop", "503", "blackhole") if any(r.get("case") == "failover" and r.get("mode") == m for r in recs)]
    for mode in modes:
        tags = {"case": "failover", "mode": mode}
        any_rec = t.sel(**tags)[0]
        case = f"failover at {any_rec.get('rate', '?')} req/s: {names[mode]} for {fmt_num(any_rec.get('outage_s'), 0)} s"
        errs = t.per_proxy(tags, lambda rs: med([r["client_errors"] for r in rs]))
        t.add(case, "client-visible errors", t.per_proxy(tags, lambda rs: fmt_range([r["client_errors"] for r in rs], 0)),
              count_verdict(errs.get("veer"), {p: errs.get(p) for p in PEERS}))
        worst = t.per_proxy(tags, lambda rs: med([r["lat_max_fault_ms"] for r in rs]))
        t.add(case, "worst latency during the fault, ms", t.per_proxy(tags, lambda rs: fmt_range([r["lat_max_fault_ms"] for r in rs])),
              ratio_verdict(worst.get("veer"), {p: worst.get(p) for p in PEERS}, False))
        conv = t.per_proxy(tags, lambda rs: med([r["all_on_secondary_ms"] for r in rs]))
        t.add(case, "all traffic on the secondary after, ms", t.per_proxy(tags, lambda rs: fmt_range([r["all_on_secondary_ms"] for r in rs])),
              ratio_verdict(conv.get("veer"), {p: conv.get(p) for p in PEERS}, False))

        def back(rs):
            vals = [r["failback_all_s"] for r in rs]
            if all(v is None for v in vals):
                return f"not within the run (+{fmt_num(med([r['run_after_recovery_s'] for r in rs]), 0)} s)"
            after_fault = [r["failback_all_after_fault_s"] for r in rs]
            missing = sum(1 for v in vals if v is None)
            s = f"{fmt_range(vals)} ({fmt_num(med(after_fault), 1)} after the fault)"
            return s + (f" [{missing} rep(s) not back]" if missing else "")
        t.add(case, "all back on the primary after recovery, s", t.per_proxy(tags, back), "–")
    # Reload.
    if any(r.get("case") == "reload" for r in recs):
        tags = {"case": "reload"}
        any_rec = t.sel(**tags)[0]
        case = f"config reload ×{any_rec.get('reloads')} under {any_rec.get('rate', '?')} req/s"
        errs = t.per_proxy(tags, lambda rs: med([r["client_errors"] for r in rs]))
        t.add(case, "client-visible errors", t.per_proxy(tags, lambda rs: fmt_range([r["client_errors"] for r in rs], 0)),
              count_verdict(errs.get("veer"), {p: errs.get(p) for p in PEERS}))
        p99 = t.per_proxy(tags, lambda rs: med([r["lat_p99_reload_ms"] for r in rs]))
        t.add(case, "p99 before → during reloads, ms",
              t.per_proxy(tags, lambda rs: f"{fmt_num(med([r['lat_p99_base_ms'] for r in rs]))} → {fmt_num(med([r['lat_p99_reload_ms'] for r in rs]))}"),
              "during " + ratio_verdict(p99.get("veer"), {p: p99.get(p) for p in PEERS}, False))
        if all("lat_p99_changing_ms" in r for r in t.sel(**tags)):
            ch = t.per_proxy(tags, lambda rs: med([r["lat_p99_changing_ms"] for r in rs]))
            t.add(case, "p99 from each change to 100 ms after clients saw it → between changes, ms",
                  t.per_proxy(tags, lambda rs: f"{fmt_num(med([r['lat_p99_changing_ms'] for r in rs]))} → {fmt_num(med([r['lat_p99_between_ms'] for r in rs]))}"),
                  "changing " + ratio_verdict(ch.get("veer"), {p: ch.get(p) for p in PEERS}, False))
        mx = t.per_proxy(tags, lambda rs: med([r["lat_max_reload_ms"] for r in rs]))
        t.add(case, "max latency during reloads, ms", t.per_proxy(tags, lambda rs: fmt_range([r["lat_max_reload_ms"] for r in rs])),
              ratio_verdict(mx.get("veer"), {p: mx.get(p) for p in PEERS}, False))
        t.add(case, "changes seen by clients; median delay, ms",
              t.per_proxy(tags, lambda rs: f"{fmt_num(med([r['reloads_applied'] for r in rs]), 0)}/{rs[0]['reloads']}; {fmt_num(med([r['apply_ms_median'] for r in rs]))}"), "–")
    # Memory.
    if any(r.get("case") == "memory" for r in recs):
        tags = {"case": "memory"}
        any_rec = t.sel(**tags)[0]
        case = f"memory, {any_rec.get('conns', 0):,} idle client conns, {any_rec.get('workers', 1)} worker"
        t.add(case, "RSS before → with the conns, MiB",
              t.per_proxy(tags, lambda rs: f"{fmt_num(med([r['rss_base_kib'] / 1024 for r in rs]), 1)} → {fmt_num(med([r['rss_loaded_kib'] / 1024 for r in rs]), 1)}"), "–")
        kib = t.per_proxy(tags, lambda rs: med([r["kib_per_conn"] for r in rs]))
        t.add(case, "KiB per idle connection", t.per_proxy(tags, lambda rs: fmt_range([r["kib_per_conn"] for r in rs], 1)),
              ratio_verdict(kib.get("veer"), {p: kib.get(p) for p in PEERS}, False))

        def setup(rs):
            opened = med([r.get("open") for r in rs])
            closed = med([r.get("closed_by_server") for r in rs])
            return f"{fmt_num(opened, 0)} open; {fmt_num(closed, 0)} closed by server in {fmt_num(rs[0].get('held_s'), 0)} s"
        t.add(case, "connections held (of the target)", t.per_proxy(tags, setup), "–")
    # Abuse.
    if any(r.get("case") == "abuse" for r in recs):
        any_rec = t.sel(case="abuse")[0]
        case = f"abuse: a normal client at {fmt_num(any_rec.get('rate'), 0)} req/s, 1 worker"
        titles = {
            "quiet": "quiet: errors; p50 / p99, ms",
            "idle": f"{any_rec.get('idle_conns', 0):,} idle h2c conns: errors; p50 / p99, ms; p99 × quiet",
            "slowloris": f"{any_rec.get('slow_conns', 0):,} slowloris conns: errors; p50 / p99, ms; p99 × quiet",
            "flood": f"malformed/aborted requests at {fmt_num(any_rec.get('flood_rate'), 0)}/s: errors; p50 / p99, ms; p99 × quiet",
        }

        def quiet_p99(p, rep):
            q = t.sel(case="abuse", phase="quiet", proxy=p, rep=rep)
            return q[0]["lat_p99_ms"] if q else None

        for phase in ("quiet", "idle", "slowloris", "flood"):
            tags = {"case": "abuse", "phase": phase}
            if not t.sel(**tags):
                continue
            # p99 ÷ the same proxy's quiet p99 of the same repetition: the median, and the range
            # across repetitions.
            def ratios(rs):
                return [r["lat_p99_ms"] / quiet_p99(r["proxy"], r["rep"]) for r in rs
                        if r.get("lat_p99_ms") is not None and quiet_p99(r["proxy"], r["rep"])]
            ratio = t.per_proxy(tags, lambda rs: med(ratios(rs)))

            def cell(rs):
                s = f"{fmt_range([r['client_errors'] for r in rs], 0)}; {fmt_num(med([r['lat_p50_ms'] for r in rs]))} / {fmt_num(med([r['lat_p99_ms'] for r in rs]))}"
                if phase != "quiet":
                    s += f"; ×{fmt_range(ratios(rs), 2)}"
                return s
            cells = t.per_proxy(tags, cell)
            errs = t.per_proxy(tags, lambda rs: max(r["client_errors"] for r in rs))
            if phase == "quiet":
                p99 = t.per_proxy(tags, lambda rs: med([r["lat_p99_ms"] for r in rs]))
                verdict = "p99 " + ratio_verdict(p99.get("veer"), {p: p99.get(p) for p in PEERS}, False)
            else:
                verdict = "p99 ratio " + ratio_verdict(ratio.get("veer"), {p: ratio.get(p) for p in PEERS}, False)
                if "veer" in errs:
                    # Issue 17's goal: no error in any repetition, and p99 within 2× of the quiet
                    # run (the median of the repetitions' ratios: on a shared machine one phase of
                    # one repetition can be slowed by something else, quiet phases included).
                    met = errs["veer"] == 0 and ratio.get("veer") is not None and ratio["veer"] <= 2
                    verdict += "; goal (0 errors, median ≤ 2×) " + ("met" if met else "missed")
            t.add(case, titles[phase], cells, verdict)

        def held(rs):
            parts = []
            for phase, what in (("idle", "idle"), ("slowloris", "slowloris")):
                ps = [r for r in t.sel(case="abuse", phase=phase, proxy=rs[0]["proxy"]) if r.get("attack_opened") is not None]
                if ps:
                    parts.append(f"{fmt_num(med([r['attack_held'] for r in ps]), 0)}/{fmt_num(med([r['attack_opened'] for r in ps]), 0)} {what}")
            return "; ".join(parts) or "–"
        t.add(case, "attack conns still open at the end (held/opened)", t.per_proxy({"case": "abuse", "phase": "quiet"}, held), "–")
    return t.rows


def table(args):
    recs = [json.loads(line) for line in open(args.results) if line.strip()]
    rows = build_rows(recs)
    present = [p for p in PROXIES if any(p in cells for _, _, cells, _ in rows)]
    out = []
    out.append("| case | metric | " + " | ".join(TITLES[p] for p in present) + " | veer vs best peer |")
    out.append("|---|---|" + "---|" * len(present) + "---|")
    for case, metric, cells, verdict in rows:
        out.append(f"| {case} | {metric} | " + " | ".join(cells.get(p, "") for p in present) + f" | {verdict} |")
    out.append("")
    for line in open(args.notes).read().splitlines():
        out.append(line)
    text = "\n".join(out) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    sys.stdout.write(text)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("kind", choices=["wrk", "h2load", "json"])
    r.add_argument("file")
    r.add_argument("tags", nargs="*")
    r.add_argument("--out", required=True)
    r.add_argument("--hz", type=float, default=100.0, help="clock ticks per second (getconf CLK_TCK)")
    t = sub.add_parser("table")
    t.add_argument("results")
    t.add_argument("notes", help="text printed under the table")
    t.add_argument("--out")
    args = ap.parse_args()
    if args.cmd == "record":
        record(args)
    else:
        table(args)


if __name__ == "__main__":
    main()
