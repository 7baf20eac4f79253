"""A netconduit 5.0.0 `Client` in a chat channel, for tests/browser.rs.

    chat_room_client.py --host H --port N --password P --name NAME --channel C
                        --members M --say TEXT --expect K

Logs in to the chat example over TCP, sets its username, joins channel C and waits
until C has M members (the join's answer and `channel_joined` events), sends TEXT with
`channel_chat`, and records the `from: message` of every `channel_chat` from others
until it has K of them; then prints `GOT <json list>`. Exits non-zero, saying why on
stderr, when a step fails or 30 s pass.
"""

import argparse
import asyncio
import json
import sys

from conduit import Client, ClientDescriptor

WAIT = 30.0


async def main(args):
    client = Client(
        ClientDescriptor(
            server_host=args.host,
            server_port=args.port,
            password=args.password,
            name="browser-test-python",
            connect_timeout=10,
            reconnect_enabled=False,
            rpc_timeout=10.0,
        )
    )
    got = []
    members = {"count": 0}
    enough_members = asyncio.Event()
    enough_lines = asyncio.Event()

    @client.on("channel_joined")
    async def _joined(payload):
        if payload.get("channel") == args.channel:
            members["count"] = max(members["count"], payload.get("count", 0))
            if members["count"] >= args.members:
                enough_members.set()

    @client.on("channel_chat")
    async def _chat(payload):
        if payload.get("channel") == args.channel:
            got.append(f"{payload.get('from')}: {payload.get('message')}")
            if len(got) >= args.expect:
                enough_lines.set()

    if not await client.connect():
        print("login failed", file=sys.stderr, flush=True)
        return 1
    named = await client.rpc.call("set_username", args={"username": args.name})
    joined = await client.rpc.call("join_channel", args={"channel": args.channel})
    if not (named.get("success") and joined.get("success")):
        print(f"set_username/join_channel failed: {named!r} {joined!r}", file=sys.stderr, flush=True)
        return 1
    members["count"] = max(members["count"], joined["data"].get("members", 0))
    if members["count"] >= args.members:
        enough_members.set()
    print("READY", flush=True)
    try:
        await asyncio.wait_for(enough_members.wait(), WAIT)
        await client.send("channel_chat", {"channel": args.channel, "message": args.say})
        await asyncio.wait_for(enough_lines.wait(), WAIT)
    except asyncio.TimeoutError:
        print(f"timed out: members {members['count']}, got {got!r}", file=sys.stderr, flush=True)
        return 1
    print(f"GOT {json.dumps(got)}", flush=True)
    await client.disconnect()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    for flag in ["--host", "--password", "--name", "--channel", "--say"]:
        parser.add_argument(flag, required=True)
    for flag in ["--port", "--members", "--expect"]:
        parser.add_argument(flag, type=int, required=True)
    sys.exit(asyncio.run(main(parser.parse_args())))
