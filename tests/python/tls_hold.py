"""Holds idle connections open to a conduit-rs server, for memory measurements.

    tls_hold.py --host H --port N --count C [--ca ca.pem]

Opens C connections (TLS, verified against `--ca`, when given: each handshake is
complete before READY), prints `READY` once all are open, and closes them when a line
arrives on stdin. Nothing is sent on them: they are connections logging in.
"""

import argparse
import asyncio
import ssl
import sys


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--ca")
    args = parser.parse_args()
    context = None
    if args.ca:
        context = ssl.create_default_context(cafile=args.ca)
    conns = []
    for _ in range(args.count):
        conns.append(await asyncio.open_connection(args.host, args.port, ssl=context))
    print("READY", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for _, writer in conns:
        writer.close()


asyncio.run(main())
