"""A netconduit 5.0.0 server for the reverse interop direction (tests/interop.rs).

    reference_server.py --port N [--password secret] [--heartbeat-interval 30]
                        [--heartbeat-timeout 90] [--lifetime 120]

RPCs `add`, `echo`, `divide`; `chat` is broadcast to everyone else and answered with
`{"sent": True}` (so the sender gets `chat_response`); `welcome` goes to each new
client; `user_joined` / `user_left` go to the others. Prints `READY <port>` once it
accepts connections. Exits when stdin closes (the test ended), after `--lifetime`
seconds, or on SIGTERM.
"""

import argparse
import asyncio
import logging
import sys
import time

from conduit import Server, ServerDescriptor


def build(port, password, heartbeat_interval, heartbeat_timeout):
    server = Server(
        ServerDescriptor(
            host="127.0.0.1",
            port=port,
            password=password,
            name="py_reference_server",
            version="1.0.0",
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
        )
    )

    @server.rpc
    async def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    @server.rpc
    async def echo(message: str) -> str:
        """Return the message unchanged."""
        return message

    @server.rpc
    async def divide(a: float, b: float) -> float:
        """Divide a by b."""
        if b == 0:
            raise ValueError("Cannot divide by zero")
        return a / b

    @server.on("chat")
    async def handle_chat(client, data):
        await server.broadcast(
            "chat",
            {"from": client.id, "message": data.get("message", ""), "time": time.time()},
            exclude={client.id},
        )
        return {"sent": True}

    @server.on_client_connect
    async def on_connect(conn):
        await conn.send_message(
            "welcome",
            {
                "client_id": conn.id,
                "message": "Welcome to py_reference_server",
                "clients": server.connection_count,
            },
        )
        await server.broadcast("user_joined", {"client_id": conn.id}, exclude={conn.id})

    @server.on_client_disconnect
    async def on_disconnect(conn):
        await server.broadcast("user_left", {"client_id": conn.id})

    return server


async def stdin_closed():
    """Resolves when stdin reaches EOF (the parent went away)."""
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return


async def main(args):
    server = build(args.port, args.password, args.heartbeat_interval, args.heartbeat_timeout)
    await server.start()
    print(f"READY {args.port}", flush=True)
    try:
        await asyncio.wait_for(stdin_closed(), timeout=args.lifetime)
    except asyncio.TimeoutError:
        pass
    finally:
        await server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--password", default="secret")
    parser.add_argument("--heartbeat-interval", type=int, default=30)
    parser.add_argument("--heartbeat-timeout", type=int, default=90)
    parser.add_argument("--lifetime", type=float, default=120.0)
    logging.basicConfig(level=logging.CRITICAL)
    asyncio.run(main(parser.parse_args()))
    # The executor thread may still sit in stdin.readline(); don't wait for it.
    sys.stdout.flush()
    import os

    os._exit(0)
