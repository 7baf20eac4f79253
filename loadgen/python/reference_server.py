#!/usr/bin/env python3
"""Reference netconduit 5.0.0 server for `conduit-loadgen --compare netconduit`.

The same handlers as `conduit-loadgen serve`:
  * RPC `add(a, b)` -> a + b
  * message `bench_broadcast` -> broadcast the data as message `tick` to every other
    connection (no reply)

Prints `READY port=<port> pid=<pid>` once it listens, and stops when stdin closes
(or on SIGINT / SIGTERM). Runs inside the venv conduit-loadgen creates at
target/netconduit-venv (`pip install netconduit==5.0.0`).
"""

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading

from conduit import Server, ServerDescriptor


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--password", default="bench-password")
    p.add_argument("--heartbeat-s", type=int, default=30,
                   help="heartbeat interval in whole seconds (netconduit's unit); timeout is 3x, at least 10 s")
    # netconduit's default of 100 would leave connection 101+ hanging unanswered.
    p.add_argument("--max-connections", type=int, default=25000)
    p.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    args = p.parse_args()

    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    interval = max(1, args.heartbeat_s)
    server = Server(ServerDescriptor(
        name="netconduit-reference",
        host=args.host,
        port=args.port,
        password=args.password,
        max_connections=args.max_connections,
        heartbeat_interval=interval,
        heartbeat_timeout=max(3 * interval, 10),
    ))

    @server.rpc
    async def add(a: int, b: int) -> int:
        """Adds two integers."""
        return a + b

    @server.on("bench_broadcast")
    async def bench_broadcast(client, data):
        await server.broadcast("tick", data, exclude={client.id})
        return None

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        def watch_stdin() -> None:
            # Returns at EOF: the load generator went away.
            sys.stdin.read()
            loop.call_soon_threadsafe(stop.set)

        await server.start()
        print(f"READY port={args.port} pid={os.getpid()}", flush=True)
        threading.Thread(target=watch_stdin, daemon=True).start()
        await stop.wait()
        await server.stop()

    asyncio.run(run())


if __name__ == "__main__":
    main()
