#!/usr/bin/env python3
"""Idle connections for the memory case: opens --conns keep-alive connections to
127.0.0.1:PORT (at most --parallel being set up at once), sends one GET on each and reads the
answer, then keeps them all open and silent. Writes {"phase": "ready", ...} to --status once
every connection is set up, holds them --hold seconds, counts how many the server closed
meanwhile, writes {"phase": "done", ...} and exits. Bounded by --hold and per-step timeouts."""
import argparse
import asyncio
import json
import time


async def main(args):
    req = f"GET / HTTP/1.1\r\nHost: {args.host}\r\nUser-Agent: veer-bench-idle\r\n\r\n".encode()
    sem = asyncio.Semaphore(args.parallel)
    conns = []
    errors = {}

    async def one():
        async with sem:
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", args.port), 10)
            except Exception as e:  # noqa: BLE001
                errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                return
            try:
                w.write(req)
                head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
                length = 0
                for line in head.decode("latin-1").split("\r\n"):
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                await asyncio.wait_for(r.readexactly(length), 10)
                if not head.startswith(b"HTTP/1.1 200"):
                    errors["non-200"] = errors.get("non-200", 0) + 1
                conns.append((r, w))
            except Exception as e:  # noqa: BLE001
                errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                w.close()

    t0 = time.monotonic()
    await asyncio.gather(*(one() for _ in range(args.conns)))
    ready = {"phase": "ready", "open": len(conns), "errors": errors, "setup_s": round(time.monotonic() - t0, 2)}
    with open(args.status, "a") as f:
        f.write(json.dumps(ready) + "\n")
    await asyncio.sleep(args.hold)
    # The event loop kept reading while we slept: a connection the server closed is at EOF
    # (or has an error set).
    closed = sum(1 for r, _ in conns if r.at_eof() or r.exception() is not None)
    for _, w in conns:
        w.close()
    with open(args.status, "a") as f:
        f.write(json.dumps({"phase": "done", "held_s": args.hold, "closed_by_server": closed}) + "\n")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="bench.default.svc.cluster.local")
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--parallel", type=int, default=256)
    ap.add_argument("--hold", type=float, default=5)
    ap.add_argument("--status", required=True)
    asyncio.run(main(ap.parse_args()))
