// The Client over an in-memory WebSocket: login, RPC, messages, heartbeat, compressed
// and malformed frames, token refresh, reconnect.

import { test } from "node:test";
import assert from "node:assert/strict";

import { Client, ConduitError, ErrorCode, FrameType, ProtocolError, encodeFrame } from "../conduit.js";
import {
  authFailure,
  authSuccess,
  fakeWebSocket,
  message,
  rpcOk,
  serverFrame,
  sleep,
  until,
} from "../testing/support.js";

const URL = "ws://127.0.0.1:1/conduit";

/** A client, its fake WebSocket class, and a collector of its events. */
function setup(options = {}) {
  const WS = fakeWebSocket();
  const client = new Client({
    url: URL,
    token: "jwt-1",
    WebSocket: WS,
    heartbeat: false,
    reconnect: { initialMs: 10, maxMs: 40, jitter: 0 },
    ...options,
  });
  const events = [];
  for (const name of ["connected", "disconnected", "reconnecting", "failed", "error"]) {
    client.onEvent(name, (value) => events.push({ name, value, at: Date.now() }));
  }
  return { WS, client, events };
}

/** Connects `client` through the next fake socket; returns the socket. */
async function login(WS, client) {
  const done = client.connect();
  const ws = await WS.next();
  ws.open();
  await until(() => ws.sent.length === 1, 1000, "AUTH_REQUEST");
  ws.push(authSuccess());
  await done;
  return ws;
}

test("connect: AUTH_REQUEST carries the token and client_info; resolves with server info", async () => {
  const { WS, client, events } = setup({ name: "chat-page", version: "2.1" });
  const done = client.connect();
  assert.equal(client.state, "connecting");
  const ws = await WS.next();
  assert.equal(ws.url, URL);
  assert.equal(ws.binaryType, "arraybuffer");
  ws.open();
  const [auth] = ws.frames();
  assert.equal(auth.header.type, FrameType.AUTH_REQUEST);
  assert.equal(auth.header.correlation, 0n);
  assert.equal(auth.header.flags, 0);
  assert.deepEqual(auth.payload, { token: "jwt-1", client_info: { name: "chat-page", version: "2.1" } });
  assert.ok(!("password_hash" in auth.payload));
  ws.push(authSuccess("ChatServer", "0.9.0"));
  const server = await done;
  assert.deepEqual(server, { name: "ChatServer", version: "0.9.0" });
  assert.equal(client.state, "connected");
  assert.ok(client.connected);
  assert.deepEqual(events.map((e) => e.name), ["connected"]);
  assert.deepEqual(events[0].value, { server, reconnected: false });
  client.close();
});

test("connect: a token function is asked at login", async () => {
  let asked = 0;
  const { WS, client } = setup({ token: async () => `jwt-${++asked}` });
  const ws = await login(WS, client);
  assert.equal(ws.frames()[0].payload.token, "jwt-1");
  assert.equal(asked, 1);
  client.close();
});

test("connect: AUTH_FAILURE rejects with the reason, closes the socket, does not retry", async () => {
  const { WS, client, events } = setup();
  const done = client.connect();
  const ws = await WS.next();
  ws.open();
  ws.push(authFailure("Invalid password"));
  await assert.rejects(done, (e) => {
    assert.ok(e instanceof ConduitError);
    assert.equal(e.message, "Invalid password");
    assert.equal(e.reason, "Invalid password");
    assert.equal(e.code, ErrorCode.AUTH_FAILED);
    return true;
  });
  assert.equal(ws.closes.length, 1);
  assert.equal(client.state, "idle");
  await sleep(50);
  assert.equal(WS.sockets.length, 1, "no reconnect after a refused first login");
  assert.deepEqual(events, []);
});

test("connect: a socket that closes before the login answer rejects", async () => {
  const { WS, client } = setup();
  const done = client.connect();
  const ws = await WS.next();
  ws.drop(1006);
  await assert.rejects(done, (e) => e.code === ErrorCode.DISCONNECTED);
  assert.equal(client.state, "idle");
});

test("connect: no login answer within connectTimeoutMs rejects with code 1002", async () => {
  const { WS, client } = setup({ connectTimeoutMs: 30 });
  const done = client.connect();
  const ws = await WS.next();
  ws.open();
  await assert.rejects(done, (e) => e.code === ErrorCode.TIMEOUT);
  assert.equal(ws.closes.length, 1);
});

test("connect: no WebSocket implementation is a clear rejection", async () => {
  const client = new Client({ url: URL, token: "t", WebSocket: undefined, heartbeat: false });
  await assert.rejects(client.connect(), /no WebSocket implementation/);
});

test("call: success resolves with the inner data; correlation ids count from 1", async () => {
  const { WS, client } = setup();
  const ws = await login(WS, client);
  const a = client.call("add", { a: 2, b: 3 });
  const b = client.call("get_users");
  const [, ra, rb] = ws.frames();
  assert.equal(ra.header.type, FrameType.RPC_REQUEST);
  assert.equal(ra.header.correlation, 1n);
  assert.deepEqual(ra.payload, { method: "add", params: { a: 2, b: 3 } });
  assert.equal(rb.header.correlation, 2n);
  assert.deepEqual(rb.payload, { method: "get_users", params: {} });
  // Answers out of order are matched by correlation id.
  ws.push(rpcOk(2, ["alice", "bob"]));
  ws.push(rpcOk(1, 5));
  assert.equal(await a, 5);
  assert.deepEqual(await b, ["alice", "bob"]);
  // RPC_ERROR (0x04) is read like RPC_RESPONSE; a null result resolves null.
  const c = client.call("noop");
  ws.push(serverFrame(FrameType.RPC_ERROR, { success: true, result: { success: true, data: null } }, { correlation: 3 }));
  assert.equal(await c, null);
  client.close();
});

test("call: failure rejects with error, code and details", async () => {
  const { WS, client } = setup();
  const ws = await login(WS, client);
  const p = client.call("create_user", { age: 200 });
  const details = { errors: [{ field: "age", message: "Input should be less than or equal to 150", type: "less_than_equal" }] };
  ws.push(
    serverFrame(
      FrameType.RPC_RESPONSE,
      { success: true, result: { success: false, error: "Validation error in create_user", code: 2000, details } },
      { correlation: 1 },
    ),
  );
  await assert.rejects(p, (e) => {
    assert.ok(e instanceof ConduitError);
    assert.equal(e.message, "Validation error in create_user");
    assert.equal(e.code, 2000);
    assert.deepEqual(e.details, details);
    return true;
  });
  // An outer failure (netconduit never sends one) rejects too.
  const q = client.call("x");
  ws.push(serverFrame(FrameType.RPC_RESPONSE, { success: false, error: "outer", code: 1000 }, { correlation: 2 }));
  await assert.rejects(q, { message: "outer", code: 1000 });
  client.close();
});

test("call: times out after rpcTimeoutMs; a late answer is dropped quietly", async () => {
  const { WS, client, events } = setup({ rpcTimeoutMs: 30 });
  const ws = await login(WS, client);
  const started = Date.now();
  await assert.rejects(client.call("slow"), (e) => {
    assert.equal(e.code, ErrorCode.TIMEOUT);
    assert.match(e.message, /slow: no reply within 30 ms/);
    return true;
  });
  assert.ok(Date.now() - started >= 25);
  ws.push(rpcOk(1, "late"));
  await sleep(5);
  assert.equal(client.state, "connected");
  assert.deepEqual(events.map((e) => e.name), ["connected"]);
  client.close();
});

test("call: rpcTimeoutMs Infinity waits for the answer", async () => {
  const { WS, client } = setup({ rpcTimeoutMs: Infinity, connectTimeoutMs: Infinity });
  const ws = await login(WS, client);
  let settled = false;
  const p = client.call("slow").finally(() => (settled = true));
  await sleep(20);
  assert.equal(settled, false);
  ws.push(rpcOk(1, "done"));
  assert.equal(await p, "done");
  client.close();
});

test("call and send when not connected", async () => {
  const { client } = setup();
  await assert.rejects(client.call("x"), { code: ErrorCode.DISCONNECTED });
  assert.throws(() => client.send("chat", {}), { code: ErrorCode.DISCONNECTED });
});

test("send: a MESSAGE {type, data} with correlation 0", async () => {
  const { WS, client } = setup();
  const ws = await login(WS, client);
  client.send("channel_chat", { channel: "#general", message: "hi" });
  const f = ws.frames().at(-1);
  assert.equal(f.header.type, FrameType.MESSAGE);
  assert.equal(f.header.correlation, 0n);
  assert.deepEqual(f.payload, { type: "channel_chat", data: { channel: "#general", message: "hi" } });
  assert.throws(() => client.send(42, {}), TypeError);
  client.close();
});

test("on: MESSAGE frames reach the handlers of their type, and '*'", async () => {
  const { WS, client, events } = setup();
  const ws = await login(WS, client);
  const chats = [];
  const all = [];
  const onChat = (data) => chats.push(data);
  client.on("chat", onChat);
  const stopAll = client.on("*", (data, type) => all.push(type));
  client.on("chat", () => {
    throw new Error("handler bug");
  });
  client.on("chat", (data, type) => chats.push(`second:${type}`));

  ws.push(message("chat", { from: "bob", message: "hi", time: 1.5e9 }));
  ws.push(message("user_joined", { username: "carol", count: 3 }));
  ws.push(serverFrame(FrameType.MESSAGE, { type: "welcome" })); // no data → null
  assert.deepEqual(chats, [{ from: "bob", message: "hi", time: 1.5e9 }, "second:chat"]);
  assert.deepEqual(all, ["chat", "user_joined", "welcome"]);
  // The throwing handler became an error event; the connection is fine.
  assert.deepEqual(
    events.filter((e) => e.name === "error").map((e) => e.value.message),
    ["handler bug"],
  );
  assert.equal(client.state, "connected");

  client.off("chat", onChat);
  stopAll();
  ws.push(message("chat", { message: "again" }));
  assert.deepEqual(chats, [{ from: "bob", message: "hi", time: 1.5e9 }, "second:chat", "second:chat"]);
  assert.deepEqual(all, ["chat", "user_joined", "welcome"]);
  client.close();
});

test("PING is answered with an empty PONG", async () => {
  const { WS, client } = setup();
  const ws = await login(WS, client);
  ws.push(serverFrame(FrameType.PING));
  const pong = ws.frames().at(-1);
  assert.equal(pong.header.type, FrameType.PONG);
  assert.equal(pong.header.length, 0);
  assert.equal(pong.header.correlation, 0n);
  assert.equal(pong.payload, undefined);
  // Frames the client has no use for are ignored.
  for (const t of [FrameType.PONG, FrameType.PAUSE, FrameType.RESUME, FrameType.ACK, FrameType.CLOSE, FrameType.RPC_LIST]) {
    ws.push(serverFrame(t));
  }
  assert.equal(ws.sent.length, 2);
  assert.equal(client.state, "connected");
  client.close();
});

test("compressed inbound frames are inflated and keep their order", async () => {
  const { WS, client } = setup();
  const ws = await login(WS, client);
  const got = [];
  client.on("note", (d) => got.push(d.n));
  const big = "z".repeat(5000);
  ws.push(message("note", { n: 1, big }, { compress: true }));
  ws.push(message("note", { n: 2 })); // plain, but must wait for the one before it
  ws.push(message("note", { n: 3, big }, { compress: true }));
  const p = client.call("get_blob");
  ws.push(
    serverFrame(FrameType.RPC_RESPONSE, { success: true, result: { success: true, data: big } }, {
      correlation: 1,
      compress: true,
    }),
  );
  assert.equal(await p, big);
  await until(() => got.length === 3, 1000, "three notes");
  assert.deepEqual(got, [1, 2, 3]);
  // Nothing the client sends is compressed.
  client.send("note", { big });
  for (const f of ws.frames()) assert.equal(f.header.flags, 0);
  client.close();
});

test("Blob and typed-array messages are read too, in order", async () => {
  const { WS, client } = setup();
  const ws = await login(WS, client);
  const got = [];
  client.on("n", (d) => got.push(d));
  ws.onmessage({ data: new Blob([message("n", 1)]) });
  ws.onmessage({ data: message("n", 2) }); // a Uint8Array
  ws.onmessage({ data: Buffer.from(message("n", 3)) });
  await until(() => got.length === 3, 1000, "three messages");
  assert.deepEqual(got, [1, 2, 3]);
  client.close();
});

test("malformed frames: error event, socket closed, pending calls rejected, nothing thrown", async (t) => {
  const uncaught = [];
  const onUncaught = (e) => uncaught.push(e);
  process.on("uncaughtException", onUncaught);
  process.on("unhandledRejection", onUncaught);
  t.after(() => {
    process.off("uncaughtException", onUncaught);
    process.off("unhandledRejection", onUncaught);
  });

  const good = message("chat", { message: "hi" });
  const mutated = (fn) => {
    const b = new Uint8Array(good);
    fn(b);
    return b;
  };
  const zlibGarbage = message("note", { text: "y".repeat(3000) }, { compress: true });
  zlibGarbage[40] ^= 0xff;
  zlibGarbage[41] ^= 0xff;
  const cases = {
    "bad magic": (ws) => ws.push(mutated((b) => (b[1] = 0))),
    "bad version": (ws) => ws.push(mutated((b) => (b[4] = 2))),
    "unknown type": (ws) => ws.push(mutated((b) => (b[7] = 0x42))),
    "length beyond the message": (ws) => ws.push(mutated((b) => (b[15] += 1))),
    "two frames in one message": (ws) => ws.push(new Uint8Array([...good, ...good])),
    "short message": (ws) => ws.push(good.subarray(0, 31)),
    "text message": (ws) => ws.pushText("hello"),
    "bad msgpack": (ws) => ws.push(mutated((b) => (b[32] = 0xc1))),
    "bad zlib": (ws) => ws.push(zlibGarbage),
    "MESSAGE without a type": (ws) => ws.push(serverFrame(FrameType.MESSAGE, { data: 1 })),
    "RPC_RESPONSE not a map": (ws) => ws.push(serverFrame(FrameType.RPC_RESPONSE, [1, 2], { correlation: 1 })),
  };
  for (const [name, inject] of Object.entries(cases)) {
    const { WS, client, events } = setup({ reconnect: false });
    const ws = await login(WS, client);
    const call = client.call("echo", { message: "x" });
    const pending = call.then(() => assert.fail("resolved"), (e) => Promise.reject(e));
    call.catch(() => {}); // settled before the assertions below look at it
    pending.catch(() => {});
    inject(ws);
    await until(() => events.some((e) => e.name === "disconnected"), 1000, `${name}: disconnect`);
    const errors = events.filter((e) => e.name === "error");
    assert.equal(errors.length, 1, name);
    assert.ok(errors[0].value instanceof ProtocolError, `${name}: ${errors[0].value}`);
    assert.equal(ws.closes.length, 1, `${name}: socket closed`);
    assert.equal(ws.closes[0].code, 4002, name);
    const gone = events.find((e) => e.name === "disconnected").value;
    assert.match(gone.reason, /^protocol error: /, name);
    assert.equal(gone.willReconnect, false);
    await assert.rejects(pending, { code: ErrorCode.DISCONNECTED }, name);
    assert.equal(client.state, "idle", name);
  }
  // Frames other than the login answer before login are refused too.
  {
    const { WS, client } = setup();
    const done = client.connect();
    const ws = await WS.next();
    ws.open();
    ws.push(message("welcome", {}));
    await assert.rejects(done, (e) => e instanceof ProtocolError && /before the login/.test(e.message));
  }
  await sleep(10);
  assert.deepEqual(uncaught, []);
});

test("reconnect: backoff, pending calls rejected, the latest token re-sent", async () => {
  const { WS, client, events } = setup({ reconnect: { initialMs: 20, maxMs: 50, jitter: 0 } });
  const first = await login(WS, client);
  const pending = client.call("slow");
  // While connected, the token is refreshed; the server accepts it.
  const refreshed = client.refreshToken("jwt-2");
  await until(() => first.sent.length === 3, 1000, "refresh AUTH_REQUEST");
  first.push(authSuccess());
  await refreshed;

  const droppedAt = Date.now();
  first.drop(1006);
  await assert.rejects(pending, (e) => {
    assert.equal(e.code, ErrorCode.DISCONNECTED);
    assert.match(e.message, /connection lost/);
    return true;
  });
  assert.equal(client.state, "reconnecting");
  const gone = events.find((e) => e.name === "disconnected").value;
  assert.equal(gone.willReconnect, true);
  await assert.rejects(client.call("x"), { code: ErrorCode.DISCONNECTED });

  // Attempts 1 and 2 fail (the socket never opens), attempt 3 logs in.
  const s1 = await WS.next();
  s1.drop(1006);
  const s2 = await WS.next();
  s2.drop(1006);
  const s3 = await WS.next();
  s3.open();
  const auth = s3.frames()[0];
  assert.equal(auth.header.type, FrameType.AUTH_REQUEST);
  assert.equal(auth.payload.token, "jwt-2");
  s3.push(authSuccess());
  await until(() => client.connected, 1000, "reconnected");

  const tries = events.filter((e) => e.name === "reconnecting").map((e) => e.value);
  assert.deepEqual(tries, [
    { attempt: 1, delayMs: 20 },
    { attempt: 2, delayMs: 40 },
    { attempt: 3, delayMs: 50 },
  ]);
  const elapsed = Date.now() - droppedAt;
  assert.ok(elapsed >= 20 + 40 + 50 - 5, `reconnected after ${elapsed} ms`);
  const back = events.filter((e) => e.name === "connected").at(-1).value;
  assert.equal(back.reconnected, true);

  // Calls work on the new socket; correlation ids carry on (never reused).
  const p = client.call("add", { a: 1, b: 1 });
  assert.equal(s3.frames().at(-1).header.correlation, 2n);
  s3.push(rpcOk(2, 2));
  assert.equal(await p, 2);

  // After a successful login the backoff starts over.
  s3.drop();
  await WS.next();
  assert.deepEqual(events.filter((e) => e.name === "reconnecting").at(-1).value, { attempt: 1, delayMs: 20 });
  client.close();
});

test("reconnect: gives up after maxAttempts with a 'failed' event", async () => {
  const { WS, client, events } = setup({ reconnect: { initialMs: 5, maxMs: 5, maxAttempts: 2, jitter: 0 } });
  const ws = await login(WS, client);
  ws.drop();
  (await WS.next()).drop();
  (await WS.next()).drop();
  await until(() => events.some((e) => e.name === "failed"), 1000, "failed");
  assert.equal(events.find((e) => e.name === "failed").value.attempts, 2);
  assert.equal(client.state, "idle");
  await sleep(30);
  assert.equal(WS.sockets.length, 3);
});

test("reconnect: a refused token stops it; a busy server is retried", async () => {
  {
    const { WS, client, events } = setup();
    const ws = await login(WS, client);
    ws.drop();
    const s1 = await WS.next();
    s1.open();
    s1.push(authFailure("server full: max_connections reached"));
    const s2 = await WS.next();
    s2.open();
    s2.push(authFailure("Invalid password"));
    await until(() => events.some((e) => e.name === "failed"), 1000, "failed");
    const failed = events.find((e) => e.name === "failed").value;
    assert.equal(failed.error.code, ErrorCode.AUTH_FAILED);
    assert.equal(failed.error.reason, "Invalid password");
    await sleep(40);
    assert.equal(WS.sockets.length, 3);
    assert.equal(client.state, "idle");
  }
  {
    // Reconnecting can be disabled.
    const { WS, client, events } = setup({ reconnect: false });
    const ws = await login(WS, client);
    ws.drop();
    await sleep(30);
    assert.equal(WS.sockets.length, 1);
    assert.deepEqual(events.at(-1).value.willReconnect, false);
  }
});

test("refreshToken: AUTH_SUCCESS resolves, AUTH_FAILURE rejects and the connection stays", async () => {
  const { WS, client, events } = setup();
  const ws = await login(WS, client);
  const ok = client.refreshToken("jwt-2");
  await until(() => ws.sent.length === 2, 1000, "refresh");
  assert.deepEqual(ws.frames()[1].payload, { token: "jwt-2", client_info: { name: "conduit-js", version: "1.0" } });
  ws.push(authSuccess());
  assert.deepEqual(await ok, { name: "ChatServer", version: "1.0.0" });

  const refused = client.refreshToken("someone-else");
  await until(() => ws.sent.length === 3, 1000, "refresh 2");
  ws.push(authFailure("token refused"));
  await assert.rejects(refused, { code: ErrorCode.AUTH_FAILED, message: "token refused" });
  assert.equal(client.state, "connected");
  assert.equal(ws.closes.length, 0);

  // A server that ignores refreshes: the promise times out.
  const quiet = new Client({ url: URL, token: "a", WebSocket: WS, heartbeat: false, rpcTimeoutMs: 20 });
  await login(WS, quiet);
  await assert.rejects(quiet.refreshToken("b"), { code: ErrorCode.TIMEOUT });
  quiet.close();

  // Not connected: the token is kept for the next login.
  client.close();
  assert.equal(await client.refreshToken("jwt-3"), null);
  const ws2 = await login(WS, client);
  assert.equal(ws2.frames()[0].payload.token, "jwt-3");
  assert.deepEqual(events.filter((e) => e.name === "error"), []);
  client.close();
});

test("close: no reconnect, pending calls rejected with code 1003", async () => {
  const { WS, client, events } = setup();
  const ws = await login(WS, client);
  const pending = client.call("slow");
  client.close();
  await assert.rejects(pending, { code: ErrorCode.CANCELLED });
  assert.equal(client.state, "closed");
  assert.deepEqual(ws.closes, [{ code: 1000, reason: "closed by the client" }]);
  assert.deepEqual(events.at(-1), {
    name: "disconnected",
    value: { reason: "closed by the client", willReconnect: false },
    at: events.at(-1).at,
  });
  await sleep(40);
  assert.equal(WS.sockets.length, 1);
  client.close(); // twice is fine

  // Closing while a login is in flight rejects it.
  const c2 = setup();
  const done = c2.client.connect();
  (await c2.WS.next()).open();
  c2.client.close();
  await assert.rejects(done, { code: ErrorCode.CANCELLED });
});

test("heartbeat: a quiet connection is pinged, then dropped and reconnected", async () => {
  const { WS, client, events } = setup({ heartbeat: { intervalMs: 20, timeoutMs: 60 } });
  const ws = await login(WS, client);
  await until(() => ws.frames().some((f) => f.header.type === FrameType.PING), 1000, "client PING");
  // Any frame from the server is life.
  ws.push(serverFrame(FrameType.PONG));
  await until(() => events.some((e) => e.name === "disconnected"), 1000, "heartbeat timeout");
  const gone = events.find((e) => e.name === "disconnected").value;
  assert.equal(gone.reason, "heartbeat timeout");
  assert.equal(gone.willReconnect, true);
  assert.equal(ws.closes.length, 1);
  const next = await WS.next();
  assert.ok(next);
  client.close();
});

test("encodeFrame round-trips through a client-visible frame", () => {
  // The frame length field counts the payload bytes that follow the header.
  const f = encodeFrame(FrameType.MESSAGE, { type: "x", data: [1, "two", null, true, 2.5] });
  assert.equal(f.length, 32 + f[15]);
});
