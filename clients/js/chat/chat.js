// The chat page: talks to the chat example (engine/examples/chat_server.rs) over
// WebSocket with conduit.js.
//
//   RPC  set_username {username}          → {set, username}
//   RPC  join_channel {channel}           → {channel, joined, members}
//   send channel_chat {channel, message}  → others in the channel get channel_chat
//                                           {channel, from, message, time}; the sender
//                                           gets channel_chat_response {sent, receivers}
//                                           (or channel_chat_error)
//   send chat {message}                   → everyone else gets chat {from, message, time};
//                                           the sender gets chat_response {sent}
//   presence: welcome {client_id, username, clients}, user_joined / user_left
//             {username, count}, channel_joined / channel_left {channel, username, count},
//             name_change {old, new}
//
// Query parameters: url, token, name, channel (connect at once when url and token, or
// a name, are given). An empty url or token is asked of the page's own server when it
// offers one (GET /config → {url}, GET /token?name=… → {token}: the chat_web example). Scripted runs: script=1&say=TEXT&expect=N — after joining, send TEXT once to
// the channel, log every chat line received into <pre id="log">, and set
// document.title to "DONE" after N lines from others, "TIMEOUT" after `timeout` ms
// (default 20000), or "ERROR" when connecting fails. Optional: members=M waits until
// the channel has M members before sending; delay=MS waits that long before sending;
// hold=1 holds the load event until the run is over (for `chromium --dump-dom`).

import { Client } from "../conduit.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

const ui = {
  url: $("url"),
  token: $("token"),
  name: $("name"),
  channel: $("channel"),
  connect: $("connect"),
  disconnect: $("disconnect"),
  message: $("message"),
  everyone: $("everyone"),
  send: $("send"),
  log: $("log"),
  status: $("status"),
  state: $("state"),
};

const script = params.get("script") === "1";
const say = params.get("say") ?? "";
const expect = Math.max(0, Number.parseInt(params.get("expect") ?? "0", 10) || 0);
const waitMembers = Math.max(0, Number.parseInt(params.get("members") ?? "0", 10) || 0);
const delayMs = Math.max(0, Number.parseInt(params.get("delay") ?? "0", 10) || 0);
const timeoutMs = Math.max(1, Number.parseInt(params.get("timeout") ?? "20000", 10) || 20000);

let client = null;
let channel = "";
let members = 0;
let received = 0; // chat lines from others
let said = false; // decided to send (the send may wait for `delay`)
let spoken = false; // sent
let finished = false;
let timeoutTimer = null;

// --- output ------------------------------------------------------------------

function append(pre, line) {
  const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  pre.append(document.createTextNode(`${line}\n`));
  if (atBottom) pre.scrollTop = pre.scrollHeight;
}

const status = (line) => append(ui.status, line);

function chatLine(line) {
  append(ui.log, line);
  received++;
  ui.log.dataset.lines = String(received);
  if (script && !finished && received >= expect && spoken) finish("DONE");
}

function finish(title, error) {
  if (finished) return;
  finished = true;
  clearTimeout(timeoutTimer);
  document.title = title;
  document.body.dataset.result = title;
  if (error) document.body.dataset.error = error.message ?? String(error);
  releaseLoad();
}

// With hold=1 a scripted run holds the page's load event until it finishes, so a
// headless `chromium --dump-dom` (which dumps at load) waits for the result in real
// time: an iframe whose document is opened and not closed keeps the page loading. Off
// by default: a WebDriver navigation waits for the load event too, and would not
// return until the run is over.
let holder = null;

function holdLoad() {
  holder = document.createElement("iframe");
  holder.hidden = true;
  holder.title = "load holder";
  document.body.append(holder);
  holder.contentDocument.open();
  holder.contentDocument.write("<!doctype html><title>running</title>");
}

function releaseLoad() {
  if (!holder) return;
  holder.contentDocument?.close();
  holder.remove();
  holder = null;
}

function setState(text, connected) {
  ui.state.textContent = text;
  ui.connect.disabled = connected;
  ui.disconnect.disabled = !client;
  for (const el of [ui.message, ui.everyone, ui.send]) el.disabled = !connected;
}

const str = (v) => (typeof v === "string" ? v : v === undefined || v === null ? "" : String(v));

// --- connection ----------------------------------------------------------------

/**
 * Fills an empty URL or token from the server that served the page, when it offers
 * them (as the chat_web example's page server does): `GET /config` → `{url}`,
 * `GET /token?name=…` → `{token}`. Anything else is ignored.
 */
async function fillFromPageServer() {
  if (!location.protocol.startsWith("http")) return;
  const json = async (path) => {
    try {
      const r = await fetch(new URL(path, location.origin), { cache: "no-store" });
      return r.ok ? await r.json() : null;
    } catch {
      return null;
    }
  };
  if (!ui.url.value.trim()) {
    const c = await json("/config");
    if (typeof c?.url === "string") ui.url.value = c.url;
  }
  const name = ui.name.value.trim();
  if (!ui.token.value.trim() && name) {
    const t = await json(`/token?name=${encodeURIComponent(name)}`);
    if (typeof t?.token === "string") ui.token.value = t.token;
  }
}

async function start() {
  await fillFromPageServer();
  const url = ui.url.value.trim();
  const token = ui.token.value.trim();
  if (!url || !token) {
    status("A WebSocket URL and a token are needed.");
    if (script) fail(new Error("no url or token"));
    return;
  }
  if (client) client.close();
  channel = ui.channel.value.trim();
  const username = ui.name.value.trim();

  const c = new Client({ url, token, name: "conduit-chat-page", version: "1.0" });
  client = c;

  c.onEvent("connected", async ({ server, reconnected }) => {
    setState(`connected to ${server.name || "server"} ${server.version}`.trim(), true);
    status(`${reconnected ? "reconnected" : "connected"} to ${server.name} ${server.version}`);
    try {
      await setUp(c, username);
    } catch (e) {
      status(`setup failed: ${e.message}${e.code ? ` (code ${e.code})` : ""}`);
      if (script) fail(e);
    }
  });
  c.onEvent("disconnected", ({ reason, willReconnect }) => {
    setState(willReconnect ? "reconnecting…" : "not connected", false);
    status(`disconnected: ${reason}${willReconnect ? "; reconnecting" : ""}`);
  });
  c.onEvent("reconnecting", ({ attempt, delayMs: ms }) => {
    status(`reconnect attempt ${attempt} in ${ms} ms`);
  });
  c.onEvent("failed", ({ error }) => {
    setState("not connected", false);
    status(`gave up reconnecting: ${error?.message ?? "unknown error"}`);
  });
  c.onEvent("error", (e) => status(`error: ${e.message}`));

  c.on("chat", (d) => chatLine(`${str(d?.from)}: ${str(d?.message)}`));
  c.on("channel_chat", (d) => chatLine(`[${str(d?.channel)}] ${str(d?.from)}: ${str(d?.message)}`));
  c.on("welcome", (d) => status(`welcome: you are ${str(d?.username)} (${str(d?.clients)} online)`));
  c.on("user_joined", (d) => status(`${str(d?.username)} joined (${str(d?.count)} online)`));
  c.on("user_left", (d) => status(`${str(d?.username)} left (${str(d?.count)} online)`));
  c.on("channel_joined", (d) => {
    if (d?.channel === channel) members = Number(d.count) || members;
    status(`${str(d?.username) || "someone"} joined ${str(d?.channel)} (${str(d?.count)} there)`);
    maybeSay(c);
  });
  c.on("channel_left", (d) => {
    if (d?.channel === channel) members = Number(d.count) || members;
    status(`${str(d?.username) || "someone"} left ${str(d?.channel)} (${str(d?.count)} there)`);
  });
  c.on("name_change", (d) => status(`${str(d?.old)} is now ${str(d?.new)}`));
  c.on("channel_chat_response", (d) => {
    if (d?.sent === false) status(`not sent: ${str(d?.error)}`);
    else status(`delivered to ${str(d?.receivers)} in ${channel}`);
  });
  c.on("channel_chat_error", (d) => status(`not sent: ${str(d?.error ?? JSON.stringify(d))}`));

  setState("connecting…", false);
  ui.disconnect.disabled = false;
  try {
    await c.connect();
  } catch (e) {
    if (client !== c) return;
    setState("not connected", false);
    status(`could not connect: ${e.message}`);
    if (script) fail(e);
  }
}

/** After each login: the username, then the channel (again after a reconnect). */
async function setUp(c, username) {
  if (username) {
    const r = await c.call("set_username", { username });
    status(`username: ${str(r?.username)}`);
  }
  if (channel) {
    const r = await c.call("join_channel", { channel });
    members = Number(r?.members) || 0;
    status(`in ${str(r?.channel)} (${members} there)`);
  }
  maybeSay(c);
}

/** Scripted runs: send `say` once, when joined and enough members are there. */
function maybeSay(c) {
  if (!script || said || finished || !c.connected) return;
  if (waitMembers && members < waitMembers) return;
  said = true;
  const go = () => {
    try {
      if (say) sendText(c, say, false);
    } catch (e) {
      status(`could not send: ${e.message}`);
    }
    spoken = true;
    if (received >= expect) finish("DONE");
  };
  if (delayMs) setTimeout(go, delayMs);
  else go();
}

function sendText(c, text, everyone) {
  if (everyone || !channel) {
    c.send("chat", { message: text });
    status(`you → everyone: ${text}`);
  } else {
    c.send("channel_chat", { channel, message: text });
    status(`you → ${channel}: ${text}`);
  }
}

function fail(e) {
  finish("ERROR", e);
}

// --- form wiring ---------------------------------------------------------------

$("connect-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  start();
});

ui.disconnect.addEventListener("click", () => {
  if (!client) return;
  client.close();
  client = null;
  setState("not connected", false);
});

$("send-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = ui.message.value.trim();
  if (!text || !client?.connected) return;
  try {
    sendText(client, text, ui.everyone.checked);
    ui.message.value = "";
  } catch (e) {
    status(`could not send: ${e.message}`);
  }
});

// --- query parameters ------------------------------------------------------------

for (const key of ["url", "token", "name", "channel"]) {
  const v = params.get(key);
  if (v !== null) ui[key].value = v;
}
if (params.has("token") && !script) {
  // Keep the token out of the address bar and the history.
  const clean = new URL(location.href);
  clean.searchParams.delete("token");
  history.replaceState(null, "", clean);
}
setState("not connected", false);
if (script) {
  document.title = "RUNNING";
  if (params.get("hold") === "1") holdLoad();
  timeoutTimer = setTimeout(() => finish("TIMEOUT"), timeoutMs);
}
if ((ui.url.value && ui.token.value) || ui.name.value || script) start();
