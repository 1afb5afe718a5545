#!/usr/bin/env python3
"""A blackhole: listens on 127.0.0.1:PORT, accepts every connection, reads and discards what
arrives, and never answers. Stops after --max-seconds (bounded) or on SIGTERM."""
import argparse
import asyncio
import signal


async def main(args):
    conns = set()

    async def serve(reader, writer):
        conns.add(writer)
        try:
            while await reader.read(65536):
                pass
        except (ConnectionError, OSError):
            pass
        finally:
            conns.discard(writer)
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", args.port, backlog=4096)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), args.max_seconds)
    except asyncio.TimeoutError:
        pass
    server.close()
    for w in list(conns):
        w.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--max-seconds", type=float, default=3600)
    asyncio.run(main(ap.parse_args()))
