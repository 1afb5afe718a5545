#!/usr/bin/env python3
"""New TLS connections per second: every request on a connection of its own, with a full handshake.

Each of --clients processes loops until --duration is over: connect, TLS handshake (SNI --sni,
ALPN http/1.1, no certificate check, as wrk), one `GET /` with `Connection: close`, read the
answer to the end of its Content-Length body, close. Python's ssl module never offers a session
it was not handed, so no handshake can be resumed: the client proves it by counting
`session_reused` (0 unless a server misbehaves). wrk and h2load are no use here: both keep the
last session in their SSL object and resume it on the next connection (see bench/README.md).

Prints one JSON line: connections done, errors by kind, connections/s over the measured span,
p50/p99 of the time from connect to the whole answer, and the TLS versions, ciphers and ALPN
protocols the server chose. Loopback only; bounded by --duration plus one connection's
timeout (5 s).
"""
import argparse
import json
import multiprocessing
import socket
import ssl
import statistics
import time


def read_response(s):
    """The answer, read as an HTTP client does: to the end of its Content-Length body (then the
    client closes), else to EOF. Waiting for EOF would time the server's way of closing."""
    buf = b""
    length = None
    while True:
        if length is None and b"\r\n\r\n" in buf:
            head, _, _ = buf.partition(b"\r\n\r\n")
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = len(head) + 4 + int(value.strip())
        if length is not None and len(buf) >= length:
            return buf
        chunk = s.recv(4096)
        if not chunk:
            return buf
        buf += chunk


def client(args, start_at, q):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    req = f"GET / HTTP/1.1\r\nHost: {args.host}\r\nConnection: close\r\n\r\n".encode()
    ok = 0
    errors = {}
    lat = []
    versions, ciphers, alpns = {}, {}, {}
    reused = 0
    while time.time() < start_at:
        time.sleep(0.001)
    deadline = start_at + args.duration
    while time.time() < deadline:
        t0 = time.perf_counter()
        try:
            with socket.create_connection(("127.0.0.1", args.port), timeout=5) as raw:
                # As wrk and curl: without it the request waits behind the client's Finished
                # (Nagle) for a server that sends nothing back at once (a delayed ACK, 40 ms).
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with ctx.wrap_socket(raw, server_hostname=args.sni) as s:
                    v, c = s.version(), s.cipher()[0]
                    a = s.selected_alpn_protocol() or "none"
                    was_reused = s.session_reused
                    s.sendall(req)
                    buf = read_response(s)
                    status = buf[9:12]
                    if status != b"200":
                        k = "status " + status.decode("latin-1", "replace")
                        errors[k] = errors.get(k, 0) + 1
                        continue
                    reused += 1 if was_reused else 0
                    versions[v] = versions.get(v, 0) + 1
                    ciphers[c] = ciphers.get(c, 0) + 1
                    alpns[a] = alpns.get(a, 0) + 1
        except (OSError, ssl.SSLError, ValueError) as e:
            k = type(e).__name__
            errors[k] = errors.get(k, 0) + 1
            continue
        lat.append((time.perf_counter() - t0) * 1e3)
        ok += 1
    q.put({"ok": ok, "errors": errors, "lat": lat, "versions": versions, "ciphers": ciphers, "alpn": alpns,
           "reused": reused, "end": time.time()})


def merge(dst, src):
    for k, v in src.items():
        dst[k] = dst.get(k, 0) + v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", required=True, help="Host header")
    ap.add_argument("--sni", required=True)
    ap.add_argument("--clients", type=int, default=4, help="processes, each one connection at a time")
    ap.add_argument("--duration", type=float, required=True)
    args = ap.parse_args()
    q = multiprocessing.Queue()
    start_at = time.time() + 0.3  # every process is up before the clock starts
    procs = [multiprocessing.Process(target=client, args=(args, start_at, q)) for _ in range(args.clients)]
    for p in procs:
        p.start()
    parts = [q.get(timeout=args.duration + 30) for _ in procs]
    for p in procs:
        p.join(10)
    ok = sum(r["ok"] for r in parts)
    errors, versions, ciphers, alpns = {}, {}, {}, {}
    lat = []
    for r in parts:
        merge(errors, r["errors"])
        merge(versions, r["versions"])
        merge(ciphers, r["ciphers"])
        merge(alpns, r["alpn"])
        lat.extend(r["lat"])
    span = max(r["end"] for r in parts) - start_at
    lat.sort()
    out = {
        "requests": ok,
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "rps": ok / span if span > 0 else 0.0,
        "span_s": round(span, 3),
        "p50_ms": statistics.median(lat) if lat else None,
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None,
        "reused": sum(r["reused"] for r in parts),
        "versions": versions,
        "ciphers": ciphers,
        "alpn": alpns,
        "clients": args.clients,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
