// Test support: golden-dump parsing, server-side frame building, and an in-memory
// WebSocket that records what the client sends and lets a test push server frames.

import { deflateSync } from "node:zlib";
import {
  encodeFrame,
  encodeHeader,
  parseFrame,
  unpackPayload,
  FrameType,
  FLAG_COMPRESSED,
  HEADER_LEN,
} from "../conduit.js";
import { encode as pack } from "../vendor/msgpack.mjs";

/**
 * Bytes from a dump in the style of protocol/tests/golden.rs: hex pairs, `|`
 * separators, and "quoted strings" written as their UTF-8 bytes.
 */
export function dump(spec) {
  const out = [];
  let rest = spec.trim();
  while (rest.length > 0) {
    if (rest[0] === '"') {
      const end = rest.indexOf('"', 1);
      if (end < 0) throw new Error("closing quote");
      out.push(...new TextEncoder().encode(rest.slice(1, end)));
      rest = rest.slice(end + 1).trimStart();
    } else {
      const m = /^\S+/.exec(rest);
      const tok = m[0];
      if (tok !== "|") {
        if (!/^[0-9a-fA-F]{2}$/.test(tok)) throw new Error(`not a hex byte: ${tok}`);
        out.push(parseInt(tok, 16));
      }
      rest = rest.slice(tok.length).trimStart();
    }
  }
  return Uint8Array.from(out);
}

export const hex = (bytes) => Buffer.from(bytes).toString("hex");

/** A frame as a server would send it; `compress` deflates the payload and sets flag bit 0. */
export function serverFrame(type, payload, { correlation = 0, compress = false, flags = 0 } = {}) {
  if (!compress) {
    const f = encodeFrame(type, payload, { correlation });
    if (flags) new DataView(f.buffer).setUint16(8, flags);
    return f;
  }
  const body = deflateSync(pack(payload));
  const out = new Uint8Array(HEADER_LEN + body.length);
  out.set(
    encodeHeader({ type, flags: flags | FLAG_COMPRESSED, length: body.length, correlation, timestamp: Date.now() }),
  );
  out.set(body, HEADER_LEN);
  return out;
}

export const authSuccess = (name = "ChatServer", version = "1.0.0") =>
  serverFrame(FrameType.AUTH_SUCCESS, {
    session_token: "ab".repeat(64),
    server_info: { name, version },
  });

export const authFailure = (reason) => serverFrame(FrameType.AUTH_FAILURE, { reason });

export const rpcOk = (correlation, data) =>
  serverFrame(FrameType.RPC_RESPONSE, { success: true, result: { success: true, data } }, { correlation });

export const message = (type, data, opts) => serverFrame(FrameType.MESSAGE, { type, data }, opts);

/** What the client sent: `{header, payload}` of one recorded WebSocket message. */
export function readSent(bytes) {
  const { header, body } = parseFrame(bytes);
  return { header, payload: unpackPayload(body) };
}

/** Waits until `cond()` is truthy (polling), or fails after `ms`. */
export async function until(cond, ms = 2000, what = "condition") {
  const end = Date.now() + ms;
  for (;;) {
    const v = cond();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * A WebSocket class of its own (so tests do not share state). Instances record
 * `sent` (Uint8Array per message) and `closes` (close() calls); the test drives them
 * with `open()`, `push(bytes)`, `pushText(s)` and `drop(code)`. `WS.next()` resolves
 * with the next socket the client creates.
 */
export function fakeWebSocket() {
  const sockets = [];
  const waiters = [];
  class FakeWebSocket {
    static CONNECTING = 0;
    static OPEN = 1;
    static CLOSING = 2;
    static CLOSED = 3;
    static sockets = sockets;

    static next() {
      const seen = FakeWebSocket._taken ?? 0;
      FakeWebSocket._taken = seen + 1;
      if (sockets.length > seen) return Promise.resolve(sockets[seen]);
      return new Promise((resolve) => waiters.push({ index: seen, resolve }));
    }

    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.binaryType = "blob";
      this.sent = [];
      this.closes = [];
      this.onopen = this.onmessage = this.onerror = this.onclose = null;
      sockets.push(this);
      for (let i = waiters.length - 1; i >= 0; i--) {
        if (waiters[i].index === sockets.length - 1) waiters.splice(i, 1)[0].resolve(this);
      }
    }

    // --- what the client calls ---
    send(data) {
      if (this.readyState !== 1) throw new Error("InvalidStateError: not open");
      if (!(data instanceof Uint8Array)) throw new Error("expected a Uint8Array");
      this.sent.push(new Uint8Array(data));
    }

    close(code, reason) {
      this.closes.push({ code, reason });
      if (this.readyState >= 2) return;
      this.readyState = 2;
      setTimeout(() => this._closed(code ?? 1005, reason ?? "", true), 0);
    }

    // --- what the test calls ---
    open() {
      this.readyState = 1;
      this.onopen?.({ type: "open" });
    }

    /** Delivers one binary message (as an ArrayBuffer, as with binaryType "arraybuffer"). */
    push(bytes) {
      const copy = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
      this.onmessage?.({ type: "message", data: copy });
    }

    pushText(text) {
      this.onmessage?.({ type: "message", data: text });
    }

    /** The server (or the network) ends the connection. */
    drop(code = 1006, reason = "") {
      if (this.readyState === 3) return;
      this.onerror?.({ type: "error" });
      this._closed(code, reason, false);
    }

    _closed(code, reason, wasClean) {
      this.readyState = 3;
      this.onclose?.({ type: "close", code, reason, wasClean });
    }

    /** Frames the client sent, decoded. */
    frames() {
      return this.sent.map(readSent);
    }
  }
  return FakeWebSocket;
}
