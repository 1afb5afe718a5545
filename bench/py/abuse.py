#!/usr/bin/env python3
"""Attackers for the abuse case: stdlib asyncio, 127.0.0.1 only, bounded in count and time.

idle-h2    opens --conns HTTP/2 (h2c, prior knowledge) connections, writes the client preface
           and an empty SETTINGS frame (33 bytes) on each, then stays silent.
slowloris  opens --conns HTTP/1.1 connections, writes a partial request head on each, then one
           more byte of a header line every --interval seconds; the head never ends.
flood      sends --rate malformed or aborted requests per second (each on a new connection, at
           most --parallel at once), cycling through KINDS: bad chunk sizes, Content-Length
           shorter and longer than the body, a client closing (FIN or RST) mid-body or mid-head,
           Transfer-Encoding with Content-Length, garbage bytes, and HTTP/2 streams reset with
           RST_STREAM mid-request or protocol errors.

Every mode runs for --duration seconds from its start (connections are opened during that time,
not before it), or until SIGTERM or SIGINT if that comes first, then writes {"phase": "done", ...} to --status: how many connections it opened,
how many the server had closed by the end ("closed_by_server"; "held" is the rest), errors by
kind, and for the flood the outcome of each request kind. It then closes everything and exits.
"""
import argparse
import asyncio
import json
import random
import signal
import socket
import struct
import time

HOST = "127.0.0.1"
STOP = None  # an asyncio.Event, set on SIGTERM/SIGINT: the harness's "the normal client is done"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


SETTINGS = frame(0x4, 0, 0)
assert len(PREFACE + SETTINGS) == 33


def hpack_literal(index, value):
    """Literal header field without indexing, name from the static table (RFC 7541 §6.2.2)."""
    v = value.encode()
    assert index < 15 and len(v) < 127
    return bytes([index]) + bytes([len(v)]) + v


def h2_post_headers(authority):
    # :method POST (static 3), :scheme http (6), :path / (4), :authority literal (name 1),
    # content-length literal (name 28).
    return b"\x83\x86\x84" + hpack_literal(1, authority) + bytes([0x0F, 28 - 15]) + b"\x04" + b"1000"


class Stats:
    def __init__(self):
        self.errors = {}
        self.outcomes = {}

    def err(self, e):
        name = type(e).__name__ if isinstance(e, BaseException) else str(e)
        self.errors[name] = self.errors.get(name, 0) + 1

    def outcome(self, kind, what):
        d = self.outcomes.setdefault(kind, {})
        d[what] = d.get(what, 0) + 1


def closed(reader):
    return reader.at_eof() or reader.exception() is not None


async def open_conn(port, stats, timeout=10):
    try:
        return await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
    except Exception as e:  # noqa: BLE001 - every failure is counted
        stats.err(e)
        return None


async def hold_many(args, first_bytes, trickle=None):
    """Opens args.conns connections (args.parallel at a time), writes first_bytes on each and, with
    trickle, one more byte every args.interval s; until the deadline. Returns the summary."""
    deadline = time.monotonic() + args.duration
    stats = Stats()
    conns = []
    sem = asyncio.Semaphore(args.parallel)
    t0 = time.monotonic()
    attempted = [0]

    async def one():
        async with sem:
            if time.monotonic() >= deadline:
                return
            c = await open_conn(args.port, stats, min(10, max(0.1, deadline - time.monotonic())))
            attempted[0] += 1
            if c is None:
                return
            r, w = c
            try:
                w.write(first_bytes)
            except Exception as e:  # noqa: BLE001
                stats.err(e)
            conns.append((r, w))
        if trickle is None:
            return
        # One byte every interval, starting at a random point of it so the writes spread out.
        await asyncio.sleep(random.uniform(0, args.interval))
        # From the start of the header line on every connection: a valid head that never ends (a
        # line started mid-way, at ": " or "\r\n", would be an invalid or a complete request).
        i = 0
        while time.monotonic() + args.interval < deadline and not closed(r):
            try:
                w.write(trickle[i % len(trickle):i % len(trickle) + 1])
            except Exception:  # noqa: BLE001 - the server closed it; counted at the end
                break
            i += 1
            await asyncio.sleep(args.interval)

    tasks = [asyncio.ensure_future(one()) for _ in range(args.conns)]
    ready_at = None
    while time.monotonic() < deadline and not STOP.is_set():
        if ready_at is None and attempted[0] == args.conns:
            ready_at = time.monotonic() - t0
            status(args, {"phase": "ready", "open": len(conns), "errors": stats.errors, "setup_s": round(ready_at, 2)})
            if args.hold is not None:
                deadline = min(deadline, time.monotonic() + args.hold)
        try:
            await asyncio.wait_for(STOP.wait(), min(0.05, max(0.001, deadline - time.monotonic())))
        except asyncio.TimeoutError:
            pass
    n_closed = sum(1 for r, _ in conns if closed(r))
    for t in tasks:
        t.cancel()
    for _, w in conns:
        w.close()
    return {"opened": len(conns), "closed_by_server": n_closed, "held": len(conns) - n_closed,
            "errors": stats.errors, "setup_s": round(ready_at, 2) if ready_at is not None else None}


# --- the flood --------------------------------------------------------------------------------

def h1(method, extra, body=b"", host=""):
    return (f"{method} / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: veer-bench-abuse\r\n".encode()
            + extra + b"\r\n" + body)


def flood_kinds(host):
    """(name, protocol, bytes to send, how to end): end is "fin" (read the answer, then close),
    "rst" (reset at once: SO_LINGER 0) or "close" (close at once, FIN)."""
    hs = PREFACE + SETTINGS + frame(0x4, 0x1, 0)  # preface, SETTINGS, SETTINGS ACK
    return [
        ("bad_chunk_size", "h1", h1("POST", b"Transfer-Encoding: chunked\r\n", b"zz\r\nhello\r\n0\r\n\r\n", host), "fin"),
        ("chunk_no_end", "h1", h1("POST", b"Transfer-Encoding: chunked\r\n", b"5\r\nhel", host), "close"),
        ("cl_shorter_than_body", "h1", h1("POST", b"Content-Length: 2\r\n", b"hello, this is not a request\r\n\r\n", host), "fin"),
        ("cl_longer_close_mid_body", "h1", h1("POST", b"Content-Length: 1000\r\n", b"0123456789", host), "close"),
        ("cl_longer_rst_mid_body", "h1", h1("POST", b"Content-Length: 1000\r\n", b"0123456789", host), "rst"),
        ("te_and_cl", "h1", h1("POST", b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n", host), "fin"),
        ("bad_cl", "h1", h1("POST", b"Content-Length: 12abc\r\n", b"", host), "fin"),
        ("close_mid_head", "h1", f"GET / HTTP/1.1\r\nHost: {host}\r\nX-Half: ".encode(), "close"),
        ("garbage", "h1", bytes(random.Random(7).randrange(256) for _ in range(300)) + b"\r\n\r\n", "fin"),
        ("h2_rst_mid_body", "h2", hs + frame(0x1, 0x4, 1, h2_post_headers(host)) + frame(0x0, 0, 1, b"x" * 100)
         + frame(0x3, 0, 1, struct.pack(">I", 0x8)), "fin"),
        ("h2_close_mid_body", "h2", hs + frame(0x1, 0x4, 1, h2_post_headers(host)) + frame(0x0, 0, 1, b"x" * 100), "close"),
        ("h2_data_on_stream_0", "h2", hs + frame(0x0, 0, 0, b"x" * 10), "fin"),
        ("h2_bad_frame_size", "h2", hs + frame(0x4, 0, 0, b"\x00\x01\x00"), "fin"),
    ]


async def flood_one(args, kind, stats):
    name, proto, data, end = kind
    port = args.h2_port if proto == "h2" else args.port
    c = await open_conn(port, stats, 2)
    if c is None:
        stats.outcome(name, "connect_failed")
        return
    r, w = c
    try:
        if end == "rst":
            w.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        w.write(data)
        if end in ("rst", "close"):
            await w.drain()
            if end == "rst":
                w.transport.abort()
            else:
                w.close()
            stats.outcome(name, "sent")
            return
        # Read what the server answers (a status line, or an h2 GOAWAY), briefly.
        try:
            got = await asyncio.wait_for(r.read(4096), args.answer_timeout)
        except asyncio.TimeoutError:
            stats.outcome(name, "no_answer")
            return
        if got.startswith(b"HTTP/1."):
            stats.outcome(name, got.split(b" ", 2)[1].decode("latin-1", "replace"))
        elif not got:
            stats.outcome(name, "closed")
        elif proto == "h2":
            # Frame types seen in the first read: 7 = GOAWAY, 3 = RST_STREAM.
            types = set()
            i = 0
            while i + 9 <= len(got):
                ln = int.from_bytes(got[i:i + 3], "big")
                types.add(got[i + 3])
                i += 9 + ln
            stats.outcome(name, "goaway" if 7 in types else "rst_stream" if 3 in types else "h2_other")
        else:
            stats.outcome(name, "other")
    except Exception as e:  # noqa: BLE001
        stats.outcome(name, "x:" + type(e).__name__)
    finally:
        w.close()


async def flood(args):
    kinds = flood_kinds(args.host)
    if args.kinds:
        want = set(args.kinds.split(","))
        kinds = [k for k in kinds if k[0] in want]
    stats = Stats()
    sem = asyncio.Semaphore(args.parallel)
    count = int(args.rate * args.duration)
    t0 = time.monotonic()
    skipped = 0

    async def one(i):
        async with sem:
            await flood_one(args, kinds[i % len(kinds)], stats)

    tasks = []
    for i in range(count):
        if STOP.is_set():
            break
        delay = t0 + i / args.rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if sem.locked():
            skipped += 1  # the server is slow to answer: the flood does not pile up beyond --parallel
            continue
        tasks.append(asyncio.ensure_future(one(i)))
    if tasks:
        # Those still in flight get their connect and answer timeouts, no more.
        await asyncio.wait(tasks, timeout=args.answer_timeout + 2)
    for t in tasks:
        t.cancel()
    sent = len(tasks)
    return {"sent": sent, "skipped_at_parallel_cap": skipped, "rate": args.rate,
            "outcomes": stats.outcomes, "errors": stats.errors}


def status(args, rec):
    with open(args.status, "a") as f:
        f.write(json.dumps(rec) + "\n")


async def main(args):
    global STOP
    STOP = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, STOP.set)
    if args.mode == "idle-h2":
        args.port = args.h2_port
        res = await hold_many(args, PREFACE + SETTINGS)
    elif args.mode == "slowloris":
        head = f"GET / HTTP/1.1\r\nHost: {args.host}\r\nUser-Agent: veer-bench-slowloris\r\n".encode()
        res = await hold_many(args, head, trickle=b"X-Slow: aaaaaaaaaaaaaaaa\r\n")
    else:
        status(args, {"phase": "ready"})
        res = await flood(args)
    res.update({"phase": "done", "mode": args.mode, "stopped_by_signal": STOP.is_set()})
    status(args, res)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["idle-h2", "slowloris", "flood"])
    ap.add_argument("--port", type=int, required=True, help="the proxy's HTTP/1.1 port")
    ap.add_argument("--h2-port", type=int, help="the proxy's h2c port (default: --port)")
    ap.add_argument("--host", default="bench.default.svc.cluster.local")
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--max-conns", type=int, default=12000, help="refuse to open more than this")
    ap.add_argument("--parallel", type=int, default=256, help="connections being opened (flood: requests in flight) at once")
    ap.add_argument("--interval", type=float, default=2.0, help="slowloris: seconds between bytes")
    ap.add_argument("--rate", type=float, default=200, help="flood: requests per second")
    ap.add_argument("--max-rate", type=float, default=2000, help="flood: refuse a higher --rate")
    ap.add_argument("--answer-timeout", type=float, default=0.5, help="flood: how long to wait for an answer")
    ap.add_argument("--kinds", default="", help="flood: only these kinds (comma-separated)")
    ap.add_argument("--duration", type=float, required=True, help="seconds, from the start")
    ap.add_argument("--hold", type=float, help="idle-h2, slowloris: end this many seconds after every connection is open (if before --duration)")
    ap.add_argument("--status", required=True)
    a = ap.parse_args()
    if a.h2_port is None:
        a.h2_port = a.port
    if a.conns > a.max_conns:
        ap.error(f"--conns {a.conns} > --max-conns {a.max_conns}")
    if a.rate > a.max_rate:
        ap.error(f"--rate {a.rate} > --max-rate {a.max_rate}")
    if a.duration > 600:
        ap.error("--duration is capped at 600 s")
    asyncio.run(main(a))
