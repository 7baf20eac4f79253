// A stand-in for the chat example (engine/examples/chat_server.rs) over WebSocket, for
// trying the chat page and conduit.js in a browser without the Rust server. It serves
// clients/js over HTTP and takes netconduit v1 frames, one per binary WebSocket
// message, on /ws. Logins use a token from an allow-list (no signature check: this is
// a test tool, not a token verifier).
//
//   npm install   (for the `ws` package)
//   node testing/chat-server.mjs [--port 8090] [--token dev-token]... [--compress] [--ping-ms 15000]
//   open http://127.0.0.1:8090/chat/index.html?url=ws://127.0.0.1:8090/ws&token=dev-token&name=alice
//
// --compress zlib-compresses payloads over 1024 bytes (flag bit 0), like a netconduit
// endpoint with enable_compression, and pads `welcome` past that size so every client
// inflates at least one frame.

import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { extname, join, normalize, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { deflateSync } from "node:zlib";
import { randomBytes } from "node:crypto";
import { WebSocketServer } from "ws";

import {
  decodeFrame,
  encodeFrame,
  encodeHeader,
  FrameType,
  FLAG_COMPRESSED,
  HEADER_LEN,
} from "../conduit.js";
import { encode as pack } from "../vendor/msgpack.mjs";

const ROOT = resolve(fileURLToPath(new URL("..", import.meta.url)));

function options(argv) {
  const o = { port: 8090, host: "127.0.0.1", tokens: [], compress: false, pingMs: 15000, quiet: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--port") o.port = Number(argv[++i]);
    else if (a === "--host") o.host = argv[++i];
    else if (a === "--token") o.tokens.push(argv[++i]);
    else if (a === "--compress") o.compress = true;
    else if (a === "--ping-ms") o.pingMs = Number(argv[++i]);
    else if (a === "--quiet") o.quiet = true;
    else throw new Error(`unknown option ${a}`);
  }
  if (o.tokens.length === 0) o.tokens.push("dev-token");
  return o;
}

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
};

/** Starts the server; resolves with `{port, close()}`. */
export async function startChatServer(opts = {}) {
  const o = { ...options([]), ...opts };
  const log = o.quiet ? () => {} : (...a) => console.log(...a);

  const http = createServer(async (req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname));
    const file = join(ROOT, path.endsWith("/") ? `${path}index.html` : path);
    if (!file.startsWith(ROOT) || file.includes(`${ROOT}/node_modules`)) {
      res.writeHead(404).end();
      return;
    }
    try {
      const body = await readFile(file);
      res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream" });
      res.end(body);
    } catch {
      res.writeHead(404).end("not found");
    }
  });

  const wss = new WebSocketServer({ server: http, path: "/ws" });
  const conns = new Set(); // logged-in connections
  let nextId = 1;

  const frame = (type, payload, correlation = 0) => {
    if (o.compress && payload !== undefined) {
      const body = pack(payload);
      if (body.length > 1024) {
        const z = deflateSync(body, { level: 6 });
        if (z.length < body.length) {
          const out = new Uint8Array(HEADER_LEN + z.length);
          out.set(encodeHeader({ type, flags: FLAG_COMPRESSED, length: z.length, correlation, timestamp: Date.now() }));
          out.set(z, HEADER_LEN);
          return out;
        }
      }
    }
    return encodeFrame(type, payload, { correlation });
  };
  const sendTo = (c, type, data) => c.ws.send(frame(FrameType.MESSAGE, { type, data }));
  const broadcast = (type, data, { except, room } = {}) => {
    let n = 0;
    for (const c of conns) {
      if (c === except || (room && !c.rooms.has(room))) continue;
      sendTo(c, type, data);
      n++;
    }
    return n;
  };
  const roomSize = (room) => [...conns].filter((c) => c.rooms.has(room)).length;
  const now = () => Date.now() / 1000 + 0.000001; // always a float64 on the wire

  const rpcs = {
    set_username(c, { username }) {
      if (typeof username !== "string") throw Object.assign(new Error("username must be a string"), { code: 2000 });
      c.username = username;
      return { set: true, username };
    },
    get_users: () => [...conns].map((c) => c.username),
    get_user_count: () => conns.size,
    join_channel(c, { channel }) {
      if (typeof channel !== "string") throw Object.assign(new Error("channel must be a string"), { code: 2000 });
      const joined = !c.rooms.has(channel);
      c.rooms.add(channel);
      const members = roomSize(channel);
      if (joined) {
        broadcast("channel_joined", { channel, username: c.username, count: members }, { except: c, room: channel });
      }
      return { channel, joined, members };
    },
    leave_channel(c, { channel }) {
      const left = c.rooms.delete(channel);
      if (left) broadcast("channel_left", { channel, username: c.username, count: roomSize(channel) }, { room: channel });
      return left;
    },
  };

  const messages = {
    chat(c, data) {
      broadcast("chat", { from: c.username, message: String(data?.message ?? ""), time: now() }, { except: c });
      return { sent: true };
    },
    channel_chat(c, data) {
      const { channel, message } = data ?? {};
      if (!c.rooms.has(channel)) return { sent: false, error: "not in that channel" };
      const receivers = broadcast(
        "channel_chat",
        { channel, from: c.username, message: String(message ?? ""), time: now() },
        { except: c, room: channel },
      );
      return { sent: true, receivers };
    },
  };

  wss.on("connection", (ws) => {
    const c = { ws, id: nextId++, username: "", rooms: new Set(), authed: false, heard: Date.now() };
    c.username = `User_${String(c.id).padStart(4, "0")}`;
    const bye = (why) => {
      log(`[-] ${c.username}: ${why}`);
      ws.terminate();
    };
    const pinger = setInterval(() => {
      if (c.authed) ws.send(frame(FrameType.PING));
    }, o.pingMs);

    ws.on("message", async (data, isBinary) => {
      c.heard = Date.now();
      if (!isBinary) return bye("text message");
      let f;
      try {
        f = await decodeFrame(new Uint8Array(data));
      } catch (e) {
        return bye(`protocol error: ${e.message}`);
      }
      const { header, payload } = f;
      if (header.type === FrameType.AUTH_REQUEST) {
        const ok = typeof payload?.token === "string" && o.tokens.includes(payload.token);
        if (c.authed) {
          ws.send(ok ? frame(FrameType.AUTH_SUCCESS, { session_token: "", server_info: { name: "ChatServer", version: "1.0.0" } })
                     : frame(FrameType.AUTH_FAILURE, { reason: "token refused" }));
          return;
        }
        if (!ok) {
          ws.send(frame(FrameType.AUTH_FAILURE, { reason: "Invalid password" }));
          return bye("refused");
        }
        c.authed = true;
        ws.send(frame(FrameType.AUTH_SUCCESS, {
          session_token: randomBytes(64).toString("hex"),
          server_info: { name: "ChatServer", version: "1.0.0" },
        }));
        conns.add(c);
        log(`[+] ${c.username} (${payload.client_info?.name ?? "?"})`);
        const welcome = { client_id: String(c.id), username: c.username, clients: conns.size };
        if (o.compress) welcome.motd = "Welcome to the conduit chat. ".repeat(60);
        sendTo(c, "welcome", welcome);
        broadcast("user_joined", { username: c.username, count: conns.size }, { except: c });
        return;
      }
      if (!c.authed) return bye("first frame is not AUTH_REQUEST");
      switch (header.type) {
        case FrameType.PING:
          ws.send(frame(FrameType.PONG));
          return;
        case FrameType.RPC_REQUEST: {
          const fn = rpcs[payload?.method];
          let inner;
          if (!fn) inner = { success: false, error: `RPC method not found: ${payload?.method}`, code: 4000 };
          else {
            try {
              inner = { success: true, data: fn(c, payload.params ?? {}) ?? null };
            } catch (e) {
              inner = { success: false, error: e.message, code: e.code ?? 1001 };
            }
          }
          ws.send(frame(FrameType.RPC_RESPONSE, { success: true, result: inner }, header.correlation));
          return;
        }
        case FrameType.MESSAGE: {
          const handler = messages[payload?.type];
          if (!handler) return;
          const reply = handler(c, payload.data);
          if (reply !== undefined) sendTo(c, `${payload.type}_response`, reply);
          return;
        }
        default:
      }
    });

    ws.on("close", () => {
      clearInterval(pinger);
      if (!conns.delete(c)) return;
      log(`[-] ${c.username} left`);
      for (const room of c.rooms) {
        broadcast("channel_left", { channel: room, username: c.username, count: roomSize(room) }, { room });
      }
      broadcast("user_left", { username: c.username, count: conns.size });
    });
  });

  await new Promise((ok, fail) => {
    http.once("error", fail);
    http.listen(o.port, o.host, ok);
  });
  const port = http.address().port;
  log(`chat stand-in on http://${o.host}:${port}/chat/index.html (WebSocket ws://${o.host}:${port}/ws)`);
  return {
    port,
    close: () =>
      new Promise((done) => {
        for (const c of wss.clients) c.terminate();
        wss.close();
        http.close(() => done());
      }),
  };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await startChatServer(options(process.argv.slice(2)));
}
