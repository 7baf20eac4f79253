// The chat page in real headless Chromium, against the stand-in chat server
// (testing/chat-server.mjs): three pages join one channel, each says one line and
// must log the other two, exactly as an automated run reads them (`--dump-dom`).
//
//   npm install && node testing/browser-check.mjs     (CHROMIUM=/path/to/chromium)
//
// Pass --server ws://host:port/path --token T --page http://.../chat/index.html to run
// the same check against another server (then nothing is started here).

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const args = process.argv.slice(2);
const arg = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const CHROMIUM = process.env.CHROMIUM ?? "chromium";
const NAMES = ["alice", "bob", "carol"];

let stop = async () => {};
let wsUrl = arg("--server");
let page = arg("--page");
const token = arg("--token") ?? "dev-token";
if (!wsUrl) {
  const { startChatServer } = await import("./chat-server.mjs");
  const server = await startChatServer({ port: 0, quiet: true, compress: true, tokens: [token] });
  wsUrl = `ws://127.0.0.1:${server.port}/ws`;
  page ??= `http://127.0.0.1:${server.port}/chat/index.html`;
  stop = server.close;
}
if (!page) throw new Error("--page is needed with --server");

function runPage(name) {
  const q = new URLSearchParams({
    url: wsUrl,
    token,
    name,
    channel: "#check",
    script: "1",
    say: `hello from ${name}`,
    expect: String(NAMES.length - 1),
    members: String(NAMES.length),
    hold: "1", // --dump-dom dumps at the load event; the page holds it until done
  });
  const profile = mkdtempSync(join(tmpdir(), "conduit-chromium-"));
  return new Promise((resolve) => {
    const child = spawn(
      CHROMIUM,
      ["--headless", "--no-sandbox", "--disable-gpu", `--user-data-dir=${profile}`, "--dump-dom", `${page}?${q}`],
      { stdio: ["ignore", "pipe", "ignore"] },
    );
    let dom = "";
    child.stdout.on("data", (d) => (dom += d));
    const killer = setTimeout(() => child.kill("SIGKILL"), 40000);
    child.on("close", () => {
      clearTimeout(killer);
      rmSync(profile, { recursive: true, force: true });
      const title = /<title>([^<]*)<\/title>/.exec(dom)?.[1] ?? "(none)";
      const log = /<pre id="log"[^>]*>([^<]*)<\/pre>/.exec(dom)?.[1] ?? "";
      resolve({ name, title, lines: log.split("\n").filter(Boolean) });
    });
  });
}

const started = Date.now();
const results = await Promise.all(NAMES.map(runPage));
await stop();
let ok = true;
for (const r of results) {
  const others = NAMES.filter((n) => n !== r.name);
  const good =
    r.title === "DONE" &&
    others.every((o) => r.lines.includes(`[#check] ${o}: hello from ${o}`)) &&
    r.lines.length === others.length;
  ok &&= good;
  console.log(`${good ? "ok  " : "FAIL"} ${r.name}: ${r.title} ${JSON.stringify(r.lines)}`);
}
console.log(`${ok ? "passed" : "failed"} in ${Date.now() - started} ms`);
process.exit(ok ? 0 : 1);
