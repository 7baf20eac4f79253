// conduit.js — a browser client for conduit-rs servers.
//
// It speaks netconduit v1 (32-byte big-endian `CNDT` header, MessagePack payloads)
// over WebSocket, one frame per binary message, and logs in with a token
// (AUTH_REQUEST `{token, client_info}`), never a password.
//
// An ES module with no build step: `import { Client } from "./conduit.js"` in a page,
// or in Node 20+ with a WebSocket implementation passed as the `WebSocket` option.
// MessagePack comes from vendor/msgpack.mjs (@msgpack/msgpack, bundled; see
// vendor/README.md).

import { encode as packValue, decode as unpackValue } from "./vendor/msgpack.mjs";

// ---------------------------------------------------------------------------
// Wire constants
// ---------------------------------------------------------------------------

/** Size of every frame header in bytes. */
export const HEADER_LEN = 32;
/** The four bytes every frame starts with: ASCII `CNDT`. */
export const MAGIC = Object.freeze([0x43, 0x4e, 0x44, 0x54]);
/** The header version of netconduit v1 (MessagePack payloads). */
export const VERSION = 0x0100;
/** Flag bit 0: the payload is zlib-compressed. Other bits are carried and ignored. */
export const FLAG_COMPRESSED = 0x0001;
/** Largest payload accepted by default, before and after inflating (16 MiB). */
export const DEFAULT_MAX_PAYLOAD_BYTES = 16 * 1024 * 1024;

/** Frame type codes (netconduit's). */
export const FrameType = Object.freeze({
  MESSAGE: 0x01,
  RPC_REQUEST: 0x02,
  RPC_RESPONSE: 0x03,
  RPC_ERROR: 0x04,
  PING: 0x05,
  PONG: 0x06,
  AUTH_REQUEST: 0x07,
  AUTH_SUCCESS: 0x08,
  AUTH_FAILURE: 0x09,
  PAUSE: 0x0a,
  RESUME: 0x0b,
  ACK: 0x0c,
  NACK: 0x0d,
  CLOSE: 0x0e,
  CLOSE_ACK: 0x0f,
  RPC_LIST: 0x10,
});

const TYPE_NAMES = Object.freeze(
  Object.fromEntries(Object.entries(FrameType).map(([name, code]) => [code, name])),
);

/**
 * Error codes on errors this client makes itself (netconduit's ErrorCode table).
 * RPC failures carry the server's own code instead.
 */
export const ErrorCode = Object.freeze({
  TIMEOUT: 1002,
  CANCELLED: 1003,
  AUTH_FAILED: 3001,
  CONNECTION_ERROR: 5000,
  DISCONNECTED: 5001,
});

/** An error with a numeric `code` and, for RPC failures, the server's `details`. */
export class ConduitError extends Error {
  constructor(message, { code, details, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "ConduitError";
    this.code = code;
    if (details !== undefined) this.details = details;
  }
}

/** A frame that breaks netconduit v1 (bad magic, version, type, length, zlib or MessagePack). */
export class ProtocolError extends ConduitError {
  constructor(message, options = {}) {
    super(message, { code: ErrorCode.CONNECTION_ERROR, ...options });
    this.name = "ProtocolError";
  }
}

// ---------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------

const U64_MAX = (1n << 64n) - 1n;

function toU64(value, field) {
  const big = typeof value === "bigint" ? value : BigInt(value);
  if (big < 0n || big > U64_MAX) throw new RangeError(`${field} out of range: ${value}`);
  return big;
}

/**
 * The 32 header bytes for `{type, flags, length, correlation, timestamp}`
 * (`version` defaults to 0x0100, `reserved` to 0; correlation and timestamp may be
 * numbers or bigints).
 */
export function encodeHeader({
  type,
  flags = 0,
  length = 0,
  correlation = 0,
  timestamp = 0,
  version = VERSION,
  reserved = 0,
}) {
  const out = new Uint8Array(HEADER_LEN);
  const view = new DataView(out.buffer);
  out.set(MAGIC, 0);
  view.setUint16(4, version);
  view.setUint16(6, type);
  view.setUint16(8, flags);
  view.setUint16(10, reserved);
  view.setUint32(12, length);
  view.setBigUint64(16, toU64(correlation, "correlation"));
  view.setBigUint64(24, toU64(timestamp, "timestamp"));
  return out;
}

/**
 * Reads a header from the first 32 bytes. Checks magic, version and type code and
 * throws a ProtocolError otherwise; `correlation` and `timestamp` are bigints.
 */
export function decodeHeader(bytes) {
  if (bytes.length < HEADER_LEN) {
    throw new ProtocolError(`frame of ${bytes.length} bytes is shorter than its header`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, HEADER_LEN);
  for (let i = 0; i < 4; i++) {
    if (bytes[i] !== MAGIC[i]) {
      const got = Array.from(bytes.subarray(0, 4), (b) => b.toString(16).padStart(2, "0"));
      throw new ProtocolError(`bad magic ${got.join(" ")}`);
    }
  }
  const version = view.getUint16(4);
  if (version !== VERSION) {
    throw new ProtocolError(`unsupported version 0x${version.toString(16).padStart(4, "0")}`);
  }
  const type = view.getUint16(6);
  if (!(type in TYPE_NAMES)) throw new ProtocolError(`unknown frame type 0x${type.toString(16)}`);
  return {
    version,
    type,
    flags: view.getUint16(8),
    reserved: view.getUint16(10),
    length: view.getUint32(12),
    correlation: view.getBigUint64(16),
    timestamp: view.getBigUint64(24),
  };
}

/** The name of a frame type code (`"RPC_RESPONSE"`), or its hex code. */
export function frameTypeName(type) {
  return TYPE_NAMES[type] ?? `0x${Number(type).toString(16)}`;
}

/**
 * One whole frame: header plus the MessagePack of `payload` (no payload when it is
 * `undefined`). Never compressed.
 */
export function encodeFrame(type, payload, { correlation = 0, timestamp = Date.now() } = {}) {
  const body = payload === undefined ? new Uint8Array(0) : packValue(payload);
  const out = new Uint8Array(HEADER_LEN + body.length);
  out.set(encodeHeader({ type, length: body.length, correlation, timestamp }), 0);
  out.set(body, HEADER_LEN);
  return out;
}

/**
 * Splits one WebSocket message into its header and payload bytes. The message must
 * hold exactly one frame: the header's length must match the bytes that follow it.
 */
export function parseFrame(bytes, { maxPayloadBytes = DEFAULT_MAX_PAYLOAD_BYTES } = {}) {
  const header = decodeHeader(bytes);
  if (header.length > maxPayloadBytes) {
    throw new ProtocolError(`payload of ${header.length} bytes exceeds ${maxPayloadBytes}`);
  }
  const rest = bytes.length - HEADER_LEN;
  if (header.length !== rest) {
    throw new ProtocolError(
      header.length > rest
        ? `truncated frame: header says ${header.length} payload bytes, ${rest} arrived`
        : `${rest - header.length} bytes after the frame (one frame per message)`,
    );
  }
  return { header, body: bytes.subarray(HEADER_LEN) };
}

/** Inflates a zlib stream with DecompressionStream("deflate"), refusing more than `max` bytes. */
export async function inflate(bytes, max = DEFAULT_MAX_PAYLOAD_BYTES) {
  if (typeof DecompressionStream !== "function") {
    throw new ProtocolError("compressed frame, but this platform has no DecompressionStream");
  }
  const stream = new DecompressionStream("deflate");
  const writer = stream.writable.getWriter();
  writer.write(bytes).catch(() => {});
  writer.close().catch(() => {});
  const reader = stream.readable.getReader();
  const chunks = [];
  let total = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > max) {
        reader.cancel().catch(() => {});
        throw new ProtocolError(`compressed payload inflates past ${max} bytes`);
      }
      chunks.push(value);
    }
  } catch (e) {
    if (e instanceof ProtocolError) throw e;
    throw new ProtocolError(`bad zlib payload: ${e?.message ?? e}`, { cause: e });
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/** The MessagePack value of a payload (`undefined` when empty). */
export function unpackPayload(body) {
  if (body.length === 0) return undefined;
  try {
    return unpackValue(body);
  } catch (e) {
    throw new ProtocolError(`bad MessagePack payload: ${e?.message ?? e}`, { cause: e });
  }
}

/**
 * Decodes one WebSocket message into `{header, payload}`: checks the header, inflates
 * a compressed payload, unpacks the MessagePack. Throws (rejects with) a ProtocolError.
 */
export async function decodeFrame(bytes, { maxPayloadBytes = DEFAULT_MAX_PAYLOAD_BYTES } = {}) {
  const { header, body } = parseFrame(bytes, { maxPayloadBytes });
  const plain = header.flags & FLAG_COMPRESSED ? await inflate(body, maxPayloadBytes) : body;
  return { header, payload: unpackPayload(plain) };
}

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------

const isMap = (v) =>
  v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof Uint8Array);

const OPEN = 1;
const MAX_DELAY_MS = 2 ** 31 - 1; // setTimeout fires at once beyond this

/** setTimeout for `ms`, or no timer (null) when `ms` is Infinity, 0 or not a number. */
function timer(ms, fn) {
  if (!(ms > 0) || !Number.isFinite(ms)) return null;
  return setTimeout(fn, Math.min(ms, MAX_DELAY_MS));
}

function bytesOf(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return null;
}

/**
 * A connection to a conduit-rs server over WebSocket.
 *
 * Events (`onEvent(name, fn)`): "connected" {server, reconnected}, "disconnected"
 * {reason, willReconnect, error?}, "reconnecting" {attempt, delayMs}, "failed"
 * {attempts, error} (reconnecting gave up), "error" (an Error: a protocol error, a
 * throwing handler, a refused token with no refresh waiting for it).
 */
export class Client {
  constructor({
    url,
    token,
    name = "conduit-js",
    version = "1.0",
    rpcTimeoutMs = 10000,
    connectTimeoutMs = 10000,
    reconnect = {},
    heartbeat = {},
    maxPayloadBytes = DEFAULT_MAX_PAYLOAD_BYTES,
    WebSocket = globalThis.WebSocket,
  } = {}) {
    if (!url) throw new TypeError("Client needs a url");
    if (token === undefined || token === null) throw new TypeError("Client needs a token");
    this.url = url;
    this.name = name;
    this.version = version;
    this.rpcTimeoutMs = rpcTimeoutMs;
    this.connectTimeoutMs = connectTimeoutMs;
    this.maxPayloadBytes = maxPayloadBytes;
    this.reconnect =
      reconnect === false
        ? null
        : { initialMs: 250, maxMs: 5000, maxAttempts: Infinity, jitter: 0.2, ...reconnect };
    this.heartbeat =
      heartbeat === false ? null : { intervalMs: 30000, timeoutMs: 90000, ...heartbeat };
    this._WebSocket = WebSocket;
    this._token = token;

    /** "idle" | "connecting" | "connected" | "reconnecting" | "closed" */
    this.state = "idle";
    /** `{name, version}` from the last AUTH_SUCCESS, or null. */
    this.server = null;

    this._gen = 0; // bumped whenever a socket is abandoned; stale events check it
    this._ws = null;
    this._login = null; // {promise, resolve, reject, timer} while a login is in flight
    this._reconnecting = false; // the current login is a reconnect attempt
    this._attempt = 0;
    this._retryTimer = null;
    this._heartbeatTimer = null;
    this._lastHeard = 0;
    this._inbox = null; // tail of the chain of frames decoded asynchronously
    this._nextId = 1; // correlation ids start at 1 and are never reused
    this._pending = new Map(); // correlation id → {resolve, reject, timer, method}
    this._refreshes = []; // token refreshes awaiting AUTH_SUCCESS / AUTH_FAILURE, in order
    this._handlers = new Map(); // message type → Set<fn>
    this._listeners = new Map(); // event name → Set<fn>
  }

  /** Whether the client is logged in now. */
  get connected() {
    return this.state === "connected";
  }

  // --- public API ---------------------------------------------------------

  /**
   * Opens the socket and logs in with the token. Resolves with the server's
   * `{name, version}`; rejects with a ConduitError (`code` 3001 and `reason` set when
   * the server sent AUTH_FAILURE). A failed first connect is not retried.
   */
  connect() {
    if (this.state === "connected") return Promise.resolve(this.server);
    if (this._login) return this._login.promise;
    if (this.state === "reconnecting") {
      // Skip the wait: try now.
      clearTimeout(this._retryTimer);
      this._retryTimer = null;
      return this._open(true);
    }
    this._attempt = 0;
    return this._open(false);
  }

  /**
   * Calls an RPC method. Resolves with the returned `data`; rejects with a
   * ConduitError carrying the server's `code` and `details`, or code 1002 after
   * `rpcTimeoutMs`, or 5001 when the connection is lost first.
   */
  call(method, params = {}) {
    if (this.state !== "connected") {
      return Promise.reject(new ConduitError("not connected", { code: ErrorCode.DISCONNECTED }));
    }
    const id = this._nextId++;
    let frame;
    try {
      frame = encodeFrame(FrameType.RPC_REQUEST, { method, params }, { correlation: id });
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise((resolve, reject) => {
      const t = timer(this.rpcTimeoutMs, () => {
        this._pending.delete(id);
        reject(
          new ConduitError(`${method}: no reply within ${this.rpcTimeoutMs} ms`, {
            code: ErrorCode.TIMEOUT,
          }),
        );
      });
      this._pending.set(id, { resolve, reject, timer: t, method });
      this._write(frame);
    });
  }

  /** Sends a MESSAGE `{type, data}` (fire and forget). Throws when not connected. */
  send(type, data = null) {
    if (typeof type !== "string") throw new TypeError("a message type is a string");
    if (this.state !== "connected") {
      throw new ConduitError("not connected", { code: ErrorCode.DISCONNECTED });
    }
    this._write(encodeFrame(FrameType.MESSAGE, { type, data }));
  }

  /**
   * Calls `handler(data, type)` for every MESSAGE of `type` ("*" for every type).
   * Returns a function that removes the handler.
   */
  on(type, handler) {
    let set = this._handlers.get(type);
    if (!set) this._handlers.set(type, (set = new Set()));
    set.add(handler);
    return () => this.off(type, handler);
  }

  /** Removes a handler added with `on`. */
  off(type, handler) {
    const set = this._handlers.get(type);
    if (set) {
      set.delete(handler);
      if (set.size === 0) this._handlers.delete(type);
    }
  }

  /** Listens to a client event (see the class comment). Returns a function that removes it. */
  onEvent(name, listener) {
    let set = this._listeners.get(name);
    if (!set) this._listeners.set(name, (set = new Set()));
    set.add(listener);
    return () => this.offEvent(name, listener);
  }

  /** Removes a listener added with `onEvent`. */
  offEvent(name, listener) {
    this._listeners.get(name)?.delete(listener);
  }

  /**
   * Replaces the token (a string, or a function returning one or a promise of one).
   * It is used for every later login. When connected it is also sent to the server
   * now: resolves with the server info on AUTH_SUCCESS, rejects with code 3001 on
   * AUTH_FAILURE (the connection stays up with the old token), 1002 with no answer
   * within `rpcTimeoutMs`. When not connected it resolves with null.
   */
  async refreshToken(token) {
    if (token === undefined || token === null) throw new TypeError("refreshToken needs a token");
    this._token = token;
    if (this.state !== "connected") return null;
    const gen = this._gen;
    const text = await this._currentToken();
    if (gen !== this._gen || this.state !== "connected") return null;
    return new Promise((resolve, reject) => {
      const entry = { resolve, reject, timer: null };
      entry.timer = timer(this.rpcTimeoutMs, () => {
        const i = this._refreshes.indexOf(entry);
        if (i >= 0) this._refreshes.splice(i, 1);
        reject(
          new ConduitError(`token refresh: no answer within ${this.rpcTimeoutMs} ms`, {
            code: ErrorCode.TIMEOUT,
          }),
        );
      });
      this._refreshes.push(entry);
      this._write(this._authFrame(text));
    });
  }

  /** Closes the connection for good (no reconnect). Pending calls are rejected. */
  close() {
    if (this.state === "closed" || this.state === "idle") {
      this.state = "closed";
      return;
    }
    const wasConnected = this.state === "connected";
    this.state = "closed";
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    const error = new ConduitError("closed by the client", { code: ErrorCode.CANCELLED });
    this._abandonSocket(1000, "closed by the client");
    this._failAll(error);
    if (this._login) this._finishLogin(null, error);
    if (wasConnected) {
      this._emit("disconnected", { reason: "closed by the client", willReconnect: false });
    }
  }

  // --- connection lifecycle -----------------------------------------------

  async _currentToken() {
    const t = typeof this._token === "function" ? await this._token() : this._token;
    if (typeof t !== "string" || t === "") throw new TypeError("the token must be a non-empty string");
    return t;
  }

  _authFrame(token) {
    return encodeFrame(FrameType.AUTH_REQUEST, {
      token,
      client_info: { name: this.name, version: this.version },
    });
  }

  /** Starts one login attempt; the returned promise settles with its outcome. */
  _open(isReconnect) {
    const gen = ++this._gen;
    this.state = "connecting";
    this._reconnecting = isReconnect;
    const login = {};
    login.promise = new Promise((resolve, reject) => {
      login.resolve = resolve;
      login.reject = reject;
    });
    this._login = login;
    login.timer = timer(this.connectTimeoutMs, () => {
      this._lost(
        gen,
        `no login reply within ${this.connectTimeoutMs} ms`,
        new ConduitError("login timed out", { code: ErrorCode.TIMEOUT }),
      );
    });
    this._startSocket(gen).catch((e) => {
      const err = e instanceof ConduitError ? e : new ConduitError(String(e?.message ?? e), {
        code: ErrorCode.CONNECTION_ERROR,
        cause: e,
      });
      this._lost(gen, err.message, err);
    });
    return login.promise;
  }

  async _startSocket(gen) {
    if (typeof this._WebSocket !== "function") {
      throw new ConduitError("no WebSocket implementation (pass the WebSocket option)", {
        code: ErrorCode.CONNECTION_ERROR,
      });
    }
    const token = await this._currentToken();
    if (gen !== this._gen) return;
    const ws = new this._WebSocket(this.url);
    this._ws = ws;
    try {
      ws.binaryType = "arraybuffer";
    } catch {
      // some implementations fix the type; Blob and views are handled too
    }
    const auth = this._authFrame(token);
    ws.onopen = () => {
      if (gen !== this._gen) return;
      this._lastHeard = Date.now();
      this._write(auth);
    };
    ws.onmessage = (ev) => this._receive(gen, ev.data);
    ws.onerror = () => {}; // a close event follows
    ws.onclose = (ev) => {
      if (gen !== this._gen) return;
      const why = ev && (ev.reason || ev.code) ? `socket closed (${ev.code}${ev.reason ? ` ${ev.reason}` : ""})` : "socket closed";
      this._lost(gen, why, new ConduitError(why, { code: ErrorCode.DISCONNECTED }));
    };
  }

  _write(frame) {
    const ws = this._ws;
    if (!ws || ws.readyState !== OPEN) return false;
    try {
      ws.send(frame);
      return true;
    } catch (e) {
      this._emit("error", e);
      return false;
    }
  }

  /** Detaches and closes the current socket; its late events are ignored. */
  _abandonSocket(code, reason) {
    this._gen++;
    this._stopHeartbeat();
    this._inbox = null;
    const ws = this._ws;
    this._ws = null;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    try {
      ws.close(code, reason);
    } catch {
      // already closing
    }
  }

  _finishLogin(server, error) {
    const login = this._login;
    if (!login) return;
    this._login = null;
    clearTimeout(login.timer);
    if (error) login.reject(error);
    else login.resolve(server);
  }

  _failAll(error) {
    for (const [, p] of this._pending) {
      clearTimeout(p.timer);
      p.reject(error);
    }
    this._pending.clear();
    for (const r of this._refreshes.splice(0)) {
      clearTimeout(r.timer);
      r.reject(error);
    }
  }

  /**
   * The socket of generation `gen` is gone (closed, timed out, broke the protocol, or
   * the server refused the login): settle what waited on it, then reconnect if that
   * is what should happen.
   */
  _lost(gen, reason, error, { authRefused = false } = {}) {
    if (gen !== this._gen || this.state === "closed") return;
    const was = this.state;
    this._abandonSocket(error instanceof ProtocolError ? 4002 : 1000, "");
    this._failAll(
      new ConduitError(`connection lost: ${reason}`, { code: ErrorCode.DISCONNECTED, cause: error }),
    );

    if (was === "connected") {
      const willReconnect = this.reconnect !== null;
      this.state = willReconnect ? "reconnecting" : "idle";
      this._emit("disconnected", { reason, willReconnect, error });
      if (willReconnect) {
        this._attempt = 0;
        this._scheduleReconnect(error);
      }
      return;
    }

    // A login attempt failed.
    const wasReconnect = this._reconnecting;
    this._finishLogin(null, error);
    if (!wasReconnect) {
      this.state = "idle";
      return;
    }
    // Refusals that are about the server's load are retried; a refused token is not.
    const retry = !authRefused || /^server /.test(error?.reason ?? "");
    if (retry) {
      this.state = "reconnecting";
      this._scheduleReconnect(error);
    } else {
      this.state = "idle";
      this._emit("failed", { attempts: this._attempt, error });
    }
  }

  _scheduleReconnect(lastError) {
    const r = this.reconnect;
    if (this._attempt >= r.maxAttempts) {
      this.state = "idle";
      this._emit("failed", { attempts: this._attempt, error: lastError });
      return;
    }
    this._attempt++;
    const base = Math.min(r.maxMs, r.initialMs * 2 ** (this._attempt - 1));
    const spread = base * (r.jitter || 0);
    const delayMs = Math.max(0, Math.round(base - spread + Math.random() * 2 * spread));
    this._emit("reconnecting", { attempt: this._attempt, delayMs });
    if (this.state !== "reconnecting") return; // a listener closed or connected
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      if (this.state !== "reconnecting") return;
      this._open(true).catch(() => {}); // the outcome arrives through _lost / "connected"
    }, Math.min(delayMs, MAX_DELAY_MS));
  }

  // --- heartbeat ------------------------------------------------------------

  _startHeartbeat(gen) {
    const hb = this.heartbeat;
    this._stopHeartbeat();
    if (!hb) return;
    const tick = Math.max(10, Math.min(hb.intervalMs, hb.timeoutMs, MAX_DELAY_MS));
    if (!Number.isFinite(tick)) return;
    this._heartbeatTimer = setInterval(() => {
      if (gen !== this._gen) return;
      const quiet = Date.now() - this._lastHeard;
      if (quiet > hb.timeoutMs) {
        this._lost(
          gen,
          "heartbeat timeout",
          new ConduitError(`nothing heard from the server for ${quiet} ms`, {
            code: ErrorCode.DISCONNECTED,
          }),
        );
      } else if (quiet >= hb.intervalMs) {
        this._write(encodeFrame(FrameType.PING));
      }
    }, tick);
  }

  _stopHeartbeat() {
    if (this._heartbeatTimer !== null) clearInterval(this._heartbeatTimer);
    this._heartbeatTimer = null;
  }

  // --- inbound --------------------------------------------------------------

  _receive(gen, data) {
    if (gen !== this._gen) return;
    this._lastHeard = Date.now();
    if (typeof data === "string") {
      return this._protocolError(gen, new ProtocolError("text WebSocket message (frames are binary)"));
    }
    const bytes = bytesOf(data);
    if (bytes === null) {
      if (data && typeof data.arrayBuffer === "function") {
        // A Blob: read it in order with the other frames.
        return this._later(gen, async () => new Uint8Array(await data.arrayBuffer()), null);
      }
      return this._protocolError(gen, new ProtocolError("WebSocket message is not binary"));
    }
    let frame;
    try {
      frame = parseFrame(bytes, { maxPayloadBytes: this.maxPayloadBytes });
    } catch (e) {
      return this._protocolError(gen, e);
    }
    if (this._inbox || frame.header.flags & FLAG_COMPRESSED) {
      return this._later(gen, null, frame);
    }
    let payload;
    try {
      payload = unpackPayload(frame.body);
    } catch (e) {
      return this._protocolError(gen, e);
    }
    this._dispatch(gen, frame.header, payload);
  }

  /** Decodes a frame off the synchronous path, keeping arrival order. */
  _later(gen, read, parsed) {
    const prev = this._inbox ?? Promise.resolve();
    const step = prev.then(async () => {
      if (gen !== this._gen) return;
      let header;
      let payload;
      try {
        const frame = parsed ?? parseFrame(await read(), { maxPayloadBytes: this.maxPayloadBytes });
        header = frame.header;
        const plain =
          header.flags & FLAG_COMPRESSED ? await inflate(frame.body, this.maxPayloadBytes) : frame.body;
        payload = unpackPayload(plain);
      } catch (e) {
        return this._protocolError(gen, e);
      }
      if (gen !== this._gen) return;
      this._dispatch(gen, header, payload);
    });
    const tail = step.catch((e) => this._emit("error", e));
    this._inbox = tail;
    tail.then(() => {
      if (this._inbox === tail) this._inbox = null;
    });
  }

  _protocolError(gen, error) {
    if (gen !== this._gen) return;
    const err =
      error instanceof ProtocolError ? error : new ProtocolError(String(error?.message ?? error), { cause: error });
    this._emit("error", err);
    this._lost(gen, `protocol error: ${err.message}`, err);
  }

  _dispatch(gen, header, payload) {
    if (gen !== this._gen) return;
    const loggedIn = this.state === "connected";
    switch (header.type) {
      case FrameType.PING:
        this._write(encodeFrame(FrameType.PONG));
        return;
      case FrameType.PONG:
        return;
      case FrameType.AUTH_SUCCESS:
        return loggedIn ? this._refreshAnswered(payload, null) : this._loggedIn(gen, payload);
      case FrameType.AUTH_FAILURE: {
        const reason = isMap(payload) && typeof payload.reason === "string" ? payload.reason : "login refused";
        const err = new ConduitError(reason, { code: ErrorCode.AUTH_FAILED });
        err.reason = reason;
        if (loggedIn) return this._refreshAnswered(null, err);
        // The server closes after it; do not wait for that.
        return this._lost(gen, `login refused: ${reason}`, err, { authRefused: true });
      }
    }
    if (!loggedIn) {
      return this._protocolError(
        gen,
        new ProtocolError(`${frameTypeName(header.type)} before the login was answered`),
      );
    }
    switch (header.type) {
      case FrameType.RPC_RESPONSE:
      case FrameType.RPC_ERROR:
        return this._rpcAnswered(gen, header, payload);
      case FrameType.MESSAGE:
        if (!isMap(payload) || typeof payload.type !== "string") {
          return this._protocolError(gen, new ProtocolError("MESSAGE payload is not {type, data}"));
        }
        return this._deliver(payload.type, payload.data === undefined ? null : payload.data);
      default:
        // PAUSE, RESUME, ACK, NACK, CLOSE, CLOSE_ACK, RPC_LIST and requests meant for a
        // server: ignored, as netconduit does.
        return;
    }
  }

  _loggedIn(gen, payload) {
    const info = isMap(payload) && isMap(payload.server_info) ? payload.server_info : {};
    this.server = {
      name: typeof info.name === "string" ? info.name : "",
      version: typeof info.version === "string" ? info.version : "",
    };
    const reconnected = this._reconnecting;
    this._reconnecting = false;
    this._attempt = 0;
    this.state = "connected";
    this._lastHeard = Date.now();
    this._startHeartbeat(gen);
    this._finishLogin(this.server, null);
    this._emit("connected", { server: this.server, reconnected });
  }

  _refreshAnswered(payload, error) {
    const entry = this._refreshes.shift();
    if (!entry) {
      if (error) this._emit("error", error);
      return;
    }
    clearTimeout(entry.timer);
    if (error) return entry.reject(error);
    const info = isMap(payload) && isMap(payload.server_info) ? payload.server_info : null;
    if (info) {
      this.server = {
        name: typeof info.name === "string" ? info.name : this.server?.name ?? "",
        version: typeof info.version === "string" ? info.version : this.server?.version ?? "",
      };
    }
    entry.resolve(this.server);
  }

  _rpcAnswered(gen, header, payload) {
    const id = header.correlation <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(header.correlation) : -1;
    const call = this._pending.get(id);
    if (!call) return; // answered after its timeout, or never asked: dropped
    if (!isMap(payload) || typeof payload.success !== "boolean") {
      return this._protocolError(gen, new ProtocolError("RPC_RESPONSE payload is not {success, result}"));
    }
    this._pending.delete(id);
    clearTimeout(call.timer);
    // Outer envelope {success, result}; the inner one {success, data} or
    // {success: false, error, code, details}.
    if (!payload.success) return call.reject(rpcError(payload, call.method));
    const inner = payload.result;
    if (isMap(inner) && typeof inner.success === "boolean") {
      if (inner.success) return call.resolve(inner.data === undefined ? null : inner.data);
      return call.reject(rpcError(inner, call.method));
    }
    call.resolve(inner === undefined ? null : inner);
  }

  _deliver(type, data) {
    for (const key of [type, "*"]) {
      const set = this._handlers.get(key);
      if (!set) continue;
      for (const handler of [...set]) {
        try {
          handler(data, type);
        } catch (e) {
          this._emit("error", e);
        }
      }
    }
  }

  _emit(name, value) {
    const set = this._listeners.get(name);
    if (!set || set.size === 0) {
      if (name === "error" && typeof console !== "undefined") console.warn("conduit:", value);
      return;
    }
    for (const listener of [...set]) {
      try {
        listener(value);
      } catch (e) {
        if (name !== "error") this._emit("error", e);
        else if (typeof console !== "undefined") console.error("conduit: error listener threw", e);
      }
    }
  }
}

function rpcError(env, method) {
  const message = typeof env.error === "string" ? env.error : `${method} failed`;
  return new ConduitError(message, {
    code: typeof env.code === "number" ? env.code : undefined,
    details: env.details,
  });
}
