"""Runs the real netconduit 5.0.0 `Client` over TLS against a conduit-rs server.

Run by tests/tls.rs with the venv's python:

    tls_client.py --host 127.0.0.1 --port N --password pw --ca ca.pem
                  [--cert client.pem --key client.key]

netconduit 5.0.0's `ClientDescriptor` has `ssl_enabled`, `ssl_ca_file`,
`ssl_cert_file` and `ssl_key_file`, but its client never uses them: its TCP socket
opens with `asyncio.open_connection` and no `ssl=`. This script adds it: the
`ssl.SSLContext` comes from netconduit's own `create_client_ssl_context`, built from
those descriptor fields, and `asyncio.open_connection` is wrapped to pass it. Nothing
else of the client changes.

The server has `echo` (its arguments back) and `whoami` RPCs and a `shout` message
broadcast to everyone as `heard`. Every case prints PASS or FAIL; the last line is
exactly `N passed, M failed`, and the exit code is non-zero when anything failed.
"""

import argparse
import asyncio
import sys
import time

from conduit import Client, ClientDescriptor
from conduit.transport.tls import TLSConfig, create_client_ssl_context

PASSED = 0
FAILED = 0


def report(ok, what):
    global PASSED, FAILED
    if ok:
        PASSED += 1
        print(f"PASS {what}")
    else:
        FAILED += 1
        print(f"FAIL {what}")


def use_tls(desc):
    """Makes every `asyncio.open_connection` of this process speak TLS as `desc`'s
    ssl_* fields say (netconduit's client ignores them)."""
    context = create_client_ssl_context(
        TLSConfig(
            enabled=desc.ssl_enabled,
            verify=desc.ssl_verify,
            ca_file=desc.ssl_ca_file,
            cert_file=desc.ssl_cert_file,
            key_file=desc.ssl_key_file,
        )
    )
    plain = asyncio.open_connection

    async def open_connection(*args, **kwargs):
        kwargs.setdefault("ssl", context)
        return await plain(*args, **kwargs)

    asyncio.open_connection = open_connection


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()

    def descriptor(name):
        return ClientDescriptor(
            server_host=args.host,
            server_port=args.port,
            password=args.password,
            name=name,
            connect_timeout=10,
            reconnect_enabled=False,
            rpc_timeout=10.0,
            ssl_enabled=True,
            ssl_ca_file=args.ca,
            ssl_cert_file=args.cert,
            ssl_key_file=args.key,
        )

    use_tls(descriptor("probe"))
    a = Client(descriptor("a"))
    b = Client(descriptor("b"))
    heard = []

    @b.on("heard")
    async def _heard(payload):
        heard.append(payload)

    report(await a.connect(), "a logs in over TLS")
    report(await b.connect(), "b logs in over TLS")
    reply = await a.rpc.call("echo", args={"message": "hi", "n": 7})
    report(
        isinstance(reply, dict)
        and reply.get("success") is True
        and reply.get("data") == {"message": "hi", "n": 7},
        f"echo over TLS: {reply!r}",
    )
    big = "z" * 200_000
    reply = await a.rpc.call("echo", args={"blob": big})
    report(
        isinstance(reply, dict) and (reply.get("data") or {}).get("blob") == big,
        "a 200 kB echo over TLS",
    )
    reply = await b.rpc.call("whoami", args={})
    report(isinstance(reply, dict) and reply.get("success") is True, f"whoami: {reply!r}")
    print(f"WHOAMI {reply.get('data') if isinstance(reply, dict) else None!r}")
    await a.send("shout", {"text": "hello"})
    deadline = time.monotonic() + 10
    while not heard and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    report(heard and heard[0] == {"text": "hello"}, f"broadcast over TLS: {heard!r}")
    await a.disconnect()
    await b.disconnect()


try:
    asyncio.run(main())
except Exception as e:  # noqa: BLE001 - any failure is reported, not raised
    FAILED += 1
    print(f"FAIL {type(e).__name__}: {e}")
print(f"{PASSED} passed, {FAILED} failed")
sys.exit(1 if FAILED else 0)
