"""A netconduit 5.0.0 `Client` on one node of a cluster, for tests/cluster.rs.

    cluster_client.py --host 127.0.0.1 --port N --password pw --room R --until TEXT

Logs in, joins room R with the node's `join` RPC, prints `READY <connection id>`,
then records the text of every `chat` message until one whose text is TEXT arrives,
and prints `GOT <json list of the texts, TEXT last>`. Exits non-zero (saying why on
stderr) when a step fails or nothing ends the wait within 20 s.
"""

import argparse
import asyncio
import json
import sys

from conduit import Client, ClientDescriptor

WAIT = 20.0


async def main(args):
    client = Client(
        ClientDescriptor(
            server_host=args.host,
            server_port=args.port,
            password=args.password,
            name="cluster-python",
            connect_timeout=10,
            reconnect_enabled=False,
            rpc_timeout=10.0,
        )
    )
    texts = []
    done = asyncio.Event()

    @client.on("chat")
    async def _chat(payload):
        texts.append(payload.get("text"))
        if payload.get("text") == args.until:
            done.set()

    if not await client.connect():
        print("login failed", file=sys.stderr, flush=True)
        return 1
    joined = await client.rpc.call("join", args={"room": args.room})
    if not joined.get("success"):
        print(f"join failed: {joined!r}", file=sys.stderr, flush=True)
        return 1
    me = await client.rpc.call("whoami", args={})
    if not me.get("success"):
        print(f"whoami failed: {me!r}", file=sys.stderr, flush=True)
        return 1
    print(f"READY {me['data']['id']}", flush=True)
    try:
        await asyncio.wait_for(done.wait(), WAIT)
    except asyncio.TimeoutError:
        print(f"no {args.until!r} within {WAIT}s; got {texts!r}", file=sys.stderr, flush=True)
        return 1
    print(f"GOT {json.dumps(texts)}", flush=True)
    await client.disconnect()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--room", required=True)
    parser.add_argument("--until", required=True)
    sys.exit(asyncio.run(main(parser.parse_args())))
