#!/usr/bin/env python3
"""Open-loop probe for the failover and reload cases: stdlib only, 127.0.0.1 only, bounded.

run      Fixed-rate HTTP/1.1 keep-alive GETs to 127.0.0.1:PORT with a Host header. Sends
         exactly rate*duration requests (capped by --max-requests), each on its schedule
         whatever the previous ones did (open loop), each with a timeout, then exits.
         Writes one JSON line per request: i, t (scheduled, wall clock s), lat (s), st (HTTP
         status, 0 on transport error), b (body when it names a backend: b1/b2), e (transport error name). Latency
         runs from when the request task started (as the peer study measured it), so the
         probe's own scheduling lag is not charged to the proxy.
failover Joins a run with an events file ("<wall-clock s> <name>" per line: down,
         down_done, up) and
         prints one JSON summary.
reload   Joins a run with an events file with "reload" lines and prints one JSON summary.
summary  Errors and latency percentiles of a whole run (the abuse case's normal client), as JSON.

Strict: a request that fails for any reason (including a keep-alive connection the proxy
closed under it) is an error; nothing is retried by the client.
"""
import argparse
import asyncio
import gc
import json
import statistics
import sys
import time

HOST = "127.0.0.1"


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    hdrs = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            hdrs[k.strip().lower()] = v.strip().lower()
    close = hdrs.get("connection") == "close"
    if "content-length" in hdrs:
        body = await reader.readexactly(int(hdrs["content-length"]))
    elif hdrs.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    elif status in (204, 304) or 100 <= status < 200:
        body = b""
    else:
        body = await reader.read()
        close = True
    return status, body, close


async def run(args):
    count = int(args.rate * args.duration)
    if count > args.max_requests:
        sys.exit(f"refusing: {count} requests > --max-requests {args.max_requests}")
    # The cyclic collector's full passes grow with the tasks and records kept (every finished
    # task stays in `tasks`) and stalled the probe for 10-30 ms at the same point of every run,
    # whichever proxy was measured; those pauses were charged to the requests in flight. The
    # run is bounded (count <= max_requests), so what cycles it leaves are freed at exit.
    gc.disable()
    req = (f"GET {args.path} HTTP/1.1\r\nHost: {args.host}\r\n"
           f"User-Agent: veer-bench-probe\r\n\r\n").encode()
    idle = []
    state = {"open": 0}
    recs = [None] * count
    mono0 = time.monotonic() + 0.05
    wall0 = time.time() + 0.05

    def wall(m):
        return wall0 + (m - mono0)

    async def one(i, sched):
        start = time.monotonic()
        conn = idle.pop() if idle else None
        st, tag, err = 0, "", ""
        try:
            if conn is None:
                if state["open"] >= args.max_conns:
                    raise RuntimeError("max-conns")
                state["open"] += 1
                try:
                    conn = await asyncio.wait_for(asyncio.open_connection(HOST, args.port), args.timeout)
                except BaseException:
                    state["open"] -= 1
                    raise
            reader, writer = conn
            writer.write(req)
            st, body, close = await asyncio.wait_for(read_response(reader), args.timeout)
            text = body.decode("latin-1").strip()
            tag = text if text in ("b1", "b2") else ""
            if close:
                writer.close()
                state["open"] -= 1
            else:
                idle.append(conn)
        except Exception as e:  # noqa: BLE001 - every failure is a data point
            err = type(e).__name__
            if isinstance(e, asyncio.IncompleteReadError):
                err = "IncompleteRead"
            if conn is not None:
                conn[1].close()
                state["open"] -= 1
        end = time.monotonic()
        recs[i] = {"i": i, "t": round(wall(sched), 6), "lat": round(end - start, 6), "st": st, "b": tag, "e": err}

    tasks = []
    for i in range(count):
        sched = mono0 + i / args.rate
        delay = sched - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(i, sched)))
    await asyncio.gather(*tasks)
    for conn in idle:
        conn[1].close()
    with open(args.out, "w") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")
    bad = sum(1 for r in recs if not (200 <= r["st"] < 300))
    print(f"sent {count} requests, {bad} not-2xx/failed -> {args.out}", file=sys.stderr)


def outcome(r):
    if r["e"]:
        return "x:" + r["e"]
    if 200 <= r["st"] < 300:
        return r["b"] or "ok-other"
    return f"http{r['st']}"


def pct(vals, q):
    if not vals:
        return None
    vals = sorted(vals)
    return vals[min(len(vals) - 1, int(q * len(vals)))]


def ms(v):
    return None if v is None else round(v * 1000, 2)


def load(args):
    recs = [json.loads(line) for line in open(args.results)]
    events = []
    for line in open(args.events):
        parts = line.split()
        if len(parts) >= 2:
            events.append((float(parts[0]), parts[1]))
    for r in recs:
        r["o"] = outcome(r)
    return recs, events


def errors_of(recs):
    errs = [r for r in recs if r["o"] not in ("b1", "b2", "ok-other")]
    kinds = {}
    for r in errs:
        kinds[r["o"]] = kinds.get(r["o"], 0) + 1
    return errs, kinds


def failover(args):
    recs, events = load(args)
    ev = {}
    for t, name in events:
        ev.setdefault(name, t)
    down, up = ev["down"], ev["up"]
    t0, end = recs[0]["t"], recs[-1]["t"]
    errs, kinds = errors_of(recs)
    pre = [r for r in recs if r["t"] < down]
    during = [r for r in recs if down <= r["t"] < up]
    after = [r for r in recs if r["t"] >= up]
    # A request counts toward the window in which it was sent. Failover convergence: from the
    # fault to the last request sent during the outage that b2 did not answer.
    # "down" is written just before the fault is applied and "down_done" once it is in force
    # (b1's process has exited, or the flag file exists): b1 answers sent in between are not a
    # failure to move.
    done = ev.get("down_done", down)
    not_b2 = [r for r in during if r["o"] != "b2" and not (r["o"] == "b1" and r["t"] < done)]
    conv = (max(r["t"] for r in not_b2) - down) if not_b2 else 0.0
    # Failback: the first request sent after recovery that b1 answered, and from when on every
    # request was b1's (only if the run ends on b1).
    b1_after = [r for r in after if r["o"] == "b1"]
    first_b1 = (min(r["t"] for r in b1_after) - up) if b1_after else None
    all_b1 = None
    if b1_after and recs[-1]["o"] == "b1":
        last_bad = max((r["t"] for r in after if r["o"] != "b1"), default=up)
        # The first b1 answer at or after the last non-b1 one.
        all_b1 = min((r["t"] for r in b1_after if r["t"] >= last_bad), default=up) - up
    lat_pre = [r["lat"] for r in pre if r["o"] in ("b1", "b2")]
    lat_fault = [r["lat"] for r in during]
    summ = {
        "requests": len(recs),
        "rate_rps": round((len(recs) - 1) / (end - t0), 1) if end > t0 else None,
        "outage_s": round(up - down, 3),
        "fault_apply_ms": ms(done - down),
        "run_after_recovery_s": round(end - up, 3),
        "client_errors": len(errs),
        "error_kinds": kinds,
        "errors_during_outage": sum(1 for r in errs if down <= r["t"] < up),
        "errors_after_recovery": sum(1 for r in errs if r["t"] >= up),
        "errors_before_fault": sum(1 for r in errs if r["t"] < down),
        "b2_before_fault": sum(1 for r in pre if r["o"] == "b2"),
        "all_on_secondary_ms": ms(conv),
        "failback_first_s": round(first_b1, 3) if first_b1 is not None else None,
        "failback_all_s": round(all_b1, 3) if all_b1 is not None else None,
        "failback_all_after_fault_s": round(all_b1 + up - down, 3) if all_b1 is not None else None,
        "lat_p50_pre_ms": ms(pct(lat_pre, 0.50)),
        "lat_p99_pre_ms": ms(pct(lat_pre, 0.99)),
        "lat_p99_fault_ms": ms(pct(lat_fault, 0.99)),
        "lat_max_fault_ms": ms(max(lat_fault)) if lat_fault else None,
    }
    print(json.dumps(summ))


def reload(args):
    recs, events = load(args)
    reloads = sorted(t for t, name in events if name == "reload")
    errs, kinds = errors_of(recs)
    first, last = reloads[0], reloads[-1]
    base = [r["lat"] for r in recs if r["t"] < first and r["o"] in ("b1", "b2")]
    window = [r for r in recs if first <= r["t"] < last + 1.0]
    lat_w = [r["lat"] for r in window]
    # Did each change take effect, and how fast: from a change to the first request sent after
    # it that the other backend answered (the one that was not serving just before).
    delays = []
    applied_after = []  # per change: seconds until clients saw it, None if they did not
    ok = [r for r in recs if r["o"] in ("b1", "b2")]
    for t in reloads:
        applied_after.append(None)
        before = [r["o"] for r in ok if t - 0.3 <= r["t"] < t]
        if not before:
            continue
        serving = max(set(before), key=before.count)
        nxt = next((r for r in ok if r["t"] >= t and r["o"] != serving), None)
        if nxt is not None and nxt["t"] - t < 2.0:
            delays.append(nxt["t"] - t)
            applied_after[-1] = nxt["t"] - t
    # The reload's own cost, apart from whatever else the machine does meanwhile: latency from
    # each change until 100 ms after clients saw it, against the rest of the same phase.
    spans = []
    for t, d in zip(reloads, applied_after):
        spans.append((t, t + (d if d is not None else 2.0) + 0.1))
    in_span = lambda r: any(a <= r["t"] < b for a, b in spans)
    lat_changing = [r["lat"] for r in window if in_span(r)]
    lat_between = [r["lat"] for r in window if not in_span(r)]
    summ = {
        "requests": len(recs),
        "reloads": len(reloads),
        "client_errors": len(errs),
        "error_kinds": kinds,
        "reloads_applied": len(delays),
        "apply_ms_median": ms(statistics.median(delays)) if delays else None,
        "lat_p50_base_ms": ms(pct(base, 0.50)),
        "lat_p99_base_ms": ms(pct(base, 0.99)),
        "lat_p50_reload_ms": ms(pct(lat_w, 0.50)),
        "lat_p99_reload_ms": ms(pct(lat_w, 0.99)),
        "lat_max_reload_ms": ms(max(lat_w)) if lat_w else None,
        "lat_p99_changing_ms": ms(pct(lat_changing, 0.99)),
        "lat_p99_between_ms": ms(pct(lat_between, 0.99)),
    }
    print(json.dumps(summ))


def summary(args):
    recs = [json.loads(line) for line in open(args.results)]
    for r in recs:
        r["o"] = outcome(r)
    errs, kinds = errors_of(recs)
    # Every request counts, failed ones with the time they took to fail.
    lat = [r["lat"] for r in recs]
    t0, end = (recs[0]["t"], recs[-1]["t"]) if recs else (0, 0)
    print(json.dumps({
        "requests": len(recs),
        "rate_rps": round((len(recs) - 1) / (end - t0), 1) if end > t0 else None,
        "client_errors": len(errs),
        "error_kinds": kinds,
        "lat_p50_ms": ms(pct(lat, 0.50)),
        "lat_p99_ms": ms(pct(lat, 0.99)),
        "lat_max_ms": ms(max(lat)) if lat else None,
    }))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--host", default="failover.local")
    r.add_argument("--rate", type=float, default=1000)
    r.add_argument("--duration", type=float, default=18)
    r.add_argument("--timeout", type=float, default=5.0)
    r.add_argument("--max-conns", type=int, default=4096)
    r.add_argument("--max-requests", type=int, default=60000)
    r.add_argument("--path", default="/")
    r.add_argument("--out", required=True)
    for name in ("failover", "reload"):
        a = sub.add_parser(name)
        a.add_argument("--results", required=True)
        a.add_argument("--events", required=True)
    a = sub.add_parser("summary")
    a.add_argument("--results", required=True)
    args = ap.parse_args()
    if args.cmd == "run":
        asyncio.run(run(args))
    elif args.cmd == "failover":
        failover(args)
    elif args.cmd == "summary":
        summary(args)
    else:
        reload(args)


if __name__ == "__main__":
    main()
