// Frame encoding and decoding against the golden frames of protocol/tests/golden.rs
// (captured from netconduit 5.0.0; netconduit-v1.md §12).

import { test } from "node:test";
import assert from "node:assert/strict";
import { deflateSync } from "node:zlib";

import {
  decodeFrame,
  decodeHeader,
  encodeFrame,
  encodeHeader,
  parseFrame,
  inflate,
  FrameType,
  ProtocolError,
  HEADER_LEN,
} from "../conduit.js";
import { dump, hex, serverFrame } from "../testing/support.js";

const SECRET_HASH = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";

const AUTH_REQUEST = dump(`
  43 4e 44 54 | 01 00 | 00 07 | 00 00 | 00 00 | 00 00 00 7a | 00 00 00 00 00 00 00 00 | 00 00 01 a2 13 c5 a2 ae
  82 ad "password_hash" d9 40 "${SECRET_HASH}"
     ab "client_info" 82 a4 "name" a8 "client_A" a7 "version" a5 "1.0.0"`);

const ADD_REQUEST = dump(`
  43 4e 44 54 | 01 00 | 00 02 | 00 00 | 00 00 | 00 00 00 1a | 00 00 00 00 00 00 00 01 | 00 00 01 a2 13 c5 a5 0e
  82 a6 "method" a3 "add" a6 "params" 82 a1 "a" 02 a1 "b" 03`);

const ADD_REPLY = dump(`
  43 4e 44 54 | 01 00 | 00 03 | 00 00 | 00 00 | 00 00 00 21 | 00 00 00 00 00 00 00 01 | 00 00 01 a2 13 c5 a5 13
  82 a7 "success" c3 a6 "result" 82 a7 "success" c3 a4 "data" 05`);

const DIVIDE_ERROR = dump(`
  43 4e 44 54 | 01 00 | 00 03 | 00 00 | 00 00 | 00 00 00 51 | 00 00 00 00 00 00 00 03 | 00 00 00 00 00 00 00 00
  82 a7 "success" c3 a6 "result" 83 a7 "success" c2
     a5 "error" d9 26 "Error in divide: Cannot divide by zero" a4 "code" cd 03 e9`);

const LISTALL = dump(`
  43 4e 44 54 | 01 00 | 00 02 | 00 00 | 00 00 | 00 00 00 18 | 00 00 00 00 00 00 00 02 | 00 00 00 00 00 00 00 00
  82 a6 "method" a7 "listall" a6 "params" 80`);

const CHAT = dump(`
  43 4e 44 54 | 01 00 | 00 01 | 00 00 | 00 00 | 00 00 00 1c | 00 00 00 00 00 00 00 00 | 00 00 01 a2 13 c5 a6 ab
  82 a4 "type" a4 "chat" a4 "data" 81 a7 "message" a2 "hi"`);

const CHAT_BROADCAST = dump(`
  43 4e 44 54 | 01 00 | 00 01 | 00 00 | 00 00 | 00 00 00 55 | 00 00 00 00 00 00 00 00 | 00 00 01 a2 13 c5 a6 ac
  82 a4 "type" a4 "chat" a4 "data"
     83 a4 "from" d9 24 "4173d997-9e07-4dff-bc9e-93592523cf04"
        a7 "message" a2 "hi"
        a4 "time" cb 41 da c1 c7 04 85 e8 8e`);

const CHAT_RESPONSE = dump(`
  43 4e 44 54 | 01 00 | 00 01 | 00 00 | 00 00 | 00 00 00 20 | 00 00 00 00 00 00 00 00 | 00 00 01 a2 13 c5 a6 ac
  82 a4 "type" ad "chat_response" a4 "data" 81 a4 "sent" c3`);

const AUTH_FAILURE = dump(`
  43 4e 44 54 | 01 00 | 00 09 | 00 00 | 00 00 | 00 00 00 19 | 00 00 00 00 00 00 00 00 | 00 00 01 a2 13 e0 60 24
  81 a6 "reason" b0 "Invalid password"`);

const PING = dump(
  "43 4e 44 54 | 01 00 | 00 05 | 00 00 | 00 00 | 00 00 00 00 | 00 00 00 00 00 00 00 00 | 00 00 01 a2 13 c5 a6 98",
);
const PONG = dump(
  "43 4e 44 54 | 01 00 | 00 06 | 00 00 | 00 00 | 00 00 00 00 | 00 00 00 00 00 00 00 00 | 00 00 01 a2 13 e0 65 3d",
);

const tsOf = (bytes) => decodeHeader(bytes).timestamp;

test("header: golden AUTH_REQUEST header decodes and re-encodes byte for byte", () => {
  const h = decodeHeader(AUTH_REQUEST.subarray(0, HEADER_LEN));
  assert.equal(h.version, 0x0100);
  assert.equal(h.type, FrameType.AUTH_REQUEST);
  assert.equal(h.flags, 0);
  assert.equal(h.reserved, 0);
  assert.equal(h.length, 0x7a);
  assert.equal(h.correlation, 0n);
  assert.equal(h.timestamp, 0x000001a213c5a2aen);
  assert.equal(hex(encodeHeader(h)), hex(AUTH_REQUEST.subarray(0, HEADER_LEN)));
});

test("header: correlation and timestamp use all 64 bits, big-endian", () => {
  const max = (1n << 64n) - 1n;
  const bytes = encodeHeader({ type: FrameType.RPC_REQUEST, correlation: max, timestamp: 1 });
  assert.equal(hex(bytes.subarray(16, 24)), "ffffffffffffffff");
  assert.equal(hex(bytes.subarray(24, 32)), "0000000000000001");
  assert.equal(decodeHeader(bytes).correlation, max);
  assert.throws(() => encodeHeader({ type: 1, correlation: -1 }), RangeError);
  assert.throws(() => encodeHeader({ type: 1, correlation: max + 1n }), RangeError);
});

test("golden client frames are reproduced byte for byte", () => {
  const cases = [
    [
      AUTH_REQUEST,
      FrameType.AUTH_REQUEST,
      { password_hash: SECRET_HASH, client_info: { name: "client_A", version: "1.0.0" } },
      0,
    ],
    [ADD_REQUEST, FrameType.RPC_REQUEST, { method: "add", params: { a: 2, b: 3 } }, 1],
    [LISTALL, FrameType.RPC_REQUEST, { method: "listall", params: {} }, 2],
    [CHAT, FrameType.MESSAGE, { type: "chat", data: { message: "hi" } }, 0],
    [ADD_REPLY, FrameType.RPC_RESPONSE, { success: true, result: { success: true, data: 5 } }, 1],
    [
      DIVIDE_ERROR,
      FrameType.RPC_RESPONSE,
      { success: true, result: { success: false, error: "Error in divide: Cannot divide by zero", code: 1001 } },
      3,
    ],
    [CHAT_RESPONSE, FrameType.MESSAGE, { type: "chat_response", data: { sent: true } }, 0],
    [AUTH_FAILURE, FrameType.AUTH_FAILURE, { reason: "Invalid password" }, 0],
    [PING, FrameType.PING, undefined, 0],
    [PONG, FrameType.PONG, undefined, 0],
  ];
  for (const [golden, type, payload, correlation] of cases) {
    const mine = encodeFrame(type, payload, { correlation, timestamp: tsOf(golden) });
    assert.equal(hex(mine), hex(golden), `frame type ${type}`);
  }
});

test("golden server frames decode to the captured values", async () => {
  const token = `767f06f0${"ab".repeat(56)}42f39f06`;
  const authSuccess = dump(`
    43 4e 44 54 | 01 00 | 00 08 | 00 00 | 00 00 | 00 00 00 c5 | 00 00 00 00 00 00 00 00 | 00 00 01 a2 13 c5 a2 af
    82 ad "session_token" d9 80 "${token}"
       ab "server_info" 82 a4 "name" b3 "py_reference_server" a7 "version" a5 "1.0.0"`);
  let f = await decodeFrame(authSuccess);
  assert.equal(f.header.type, FrameType.AUTH_SUCCESS);
  assert.deepEqual(f.payload, {
    session_token: token,
    server_info: { name: "py_reference_server", version: "1.0.0" },
  });

  f = await decodeFrame(ADD_REPLY);
  assert.equal(f.header.correlation, 1n);
  assert.deepEqual(f.payload, { success: true, result: { success: true, data: 5 } });

  f = await decodeFrame(DIVIDE_ERROR);
  assert.equal(f.header.correlation, 3n);
  assert.deepEqual(f.payload.result, {
    success: false,
    error: "Error in divide: Cannot divide by zero",
    code: 1001,
  });

  f = await decodeFrame(CHAT_BROADCAST);
  assert.equal(f.payload.type, "chat");
  assert.equal(f.payload.data.from, "4173d997-9e07-4dff-bc9e-93592523cf04");
  assert.ok(f.payload.data.time > 1.7e9 && !Number.isInteger(f.payload.data.time));
  // Re-encoded, the float stays a float64 (cb) and the frame is identical.
  assert.equal(
    hex(encodeFrame(FrameType.MESSAGE, f.payload, { timestamp: tsOf(CHAT_BROADCAST) })),
    hex(CHAT_BROADCAST),
  );

  f = await decodeFrame(AUTH_FAILURE);
  assert.deepEqual(f.payload, { reason: "Invalid password" });

  f = await decodeFrame(PING);
  assert.equal(f.header.type, FrameType.PING);
  assert.equal(f.payload, undefined);
});

test("AUTH_REQUEST with a token: {token, client_info:{name, version}}, token first", () => {
  const jwt =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTc1MDAwMDAwMH0.c2lnbmF0dXJl";
  const expected = dump(`
    43 4e 44 54 | 01 00 | 00 07 | 00 00 | 00 00 | 00 00 00 8f | 00 00 00 00 00 00 00 00 | 00 00 01 a2 13 c5 a2 ae
    82 a5 "token" d9 5d "${jwt}"
       ab "client_info" 82 a4 "name" a8 "client_A" a7 "version" a5 "1.0.0"`);
  const mine = encodeFrame(
    FrameType.AUTH_REQUEST,
    { token: jwt, client_info: { name: "client_A", version: "1.0.0" } },
    { timestamp: 0x000001a213c5a2aen },
  );
  assert.equal(hex(mine), hex(expected));
});

test("unknown flag bits are accepted", async () => {
  const f = serverFrame(FrameType.PING, undefined, { flags: 0x8000 });
  const { header } = await decodeFrame(f);
  assert.equal(header.flags, 0x8000);
});

test("malformed frames are ProtocolErrors", async () => {
  const bad = (mutate) => {
    const b = new Uint8Array(CHAT);
    mutate(b);
    return b;
  };
  const cases = {
    "bad magic": bad((b) => (b[0] = 0x58)),
    "version 0x0200": bad((b) => (b[4] = 0x02)),
    "version 0x0101": bad((b) => (b[5] = 0x01)),
    "type 0": bad((b) => (b[7] = 0x00)),
    "type 0x11": bad((b) => (b[7] = 0x11)),
    "length too large": bad((b) => (b[15] = 0x1d)),
    "length too small": bad((b) => (b[15] = 0x1b)),
    "header only": CHAT.subarray(0, 20),
    "empty": new Uint8Array(0),
    "bad msgpack": (() => {
      const b = new Uint8Array(HEADER_LEN + 1);
      b.set(CHAT.subarray(0, HEADER_LEN));
      b[15] = 1;
      b[HEADER_LEN] = 0xc1; // never used
      return b;
    })(),
  };
  for (const [name, bytes] of Object.entries(cases)) {
    await assert.rejects(decodeFrame(bytes), ProtocolError, name);
  }
  assert.throws(() => parseFrame(CHAT, { maxPayloadBytes: 10 }), /exceeds 10/);
});

test("compressed payloads (flag bit 0, zlib) are inflated; bad or oversized zlib is refused", async () => {
  const big = { type: "note", data: { text: "z".repeat(5000) } };
  const frame = serverFrame(FrameType.MESSAGE, big, { compress: true });
  const h = decodeHeader(frame);
  assert.equal(h.flags & 1, 1);
  assert.ok(h.length < 200, `compressed to ${h.length}`);
  assert.deepEqual((await decodeFrame(frame)).payload, big);

  await assert.rejects(decodeFrame(frame, { maxPayloadBytes: 1000 }), /inflates past 1000/);

  const corrupt = new Uint8Array(frame);
  corrupt[HEADER_LEN + 5] ^= 0xff;
  corrupt[HEADER_LEN + 6] ^= 0xff;
  await assert.rejects(decodeFrame(corrupt), ProtocolError);

  const notZlib = serverFrame(FrameType.MESSAGE, big);
  new DataView(notZlib.buffer).setUint16(8, 1);
  await assert.rejects(decodeFrame(notZlib), ProtocolError);

  assert.deepEqual(await inflate(deflateSync(Buffer.from("hello"))), new TextEncoder().encode("hello"));
});
