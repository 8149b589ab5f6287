// Test helpers: real `herald dev` processes, tokens, the server API, and bounded waits.
//
// HERALD_PYTHON is the interpreter with Herald installed (the pytest module sets it to its own);
// every wait is bounded and scaled by HERALD_TESTS_TIMEOUT_FACTOR, like the Python suite's.
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { once } from "node:events";
import { createInterface } from "node:readline";

export const FACTOR = Number(process.env.HERALD_TESTS_TIMEOUT_FACTOR || "1");
export const seconds = (s) => s * 1000 * FACTOR;
export const API_KEY = "dev-key";
const PYTHON = process.env.HERALD_PYTHON || "python3";

const b64url = (v) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");

/** An HS256 JWT for `user` signed with herald dev's secret. */
export function makeToken(user, { ttl = 600, channels = ["room:*", "news:*", "bench*"], publish = ["room:*"],
                                  secret = "dev-secret", ...claims } = {}) {
  const head = b64url({ alg: "HS256", typ: "JWT" });
  const body = b64url({ sub: user, exp: Math.floor(Date.now() / 1000 + ttl), channels, publish, ...claims });
  const sig = createHmac("sha256", secret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

/** A `herald dev` subprocess on `port` (0: any), ready when this resolves. */
export async function startHerald(args = [], { port = 0 } = {}) {
  const argv = ["-m", "herald", "dev", "--host", "127.0.0.1", "--port", String(port), "--log-format", "json", ...args];
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("HERALD_")));
  const proc = spawn(PYTHON, argv, { env: { ...env, PYTHONUNBUFFERED: "1" }, stdio: ["ignore", "pipe", "pipe"] });
  const lines = [];
  const started = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("herald did not start:\n" + lines.join("\n"))), seconds(20));
    for (const stream of [proc.stdout, proc.stderr]) { // the log goes to stderr, the banner to stdout
      createInterface({ input: stream }).on("line", (line) => {
        if (lines.push(line) > 2000) lines.splice(0, 1000);
        const m = /"event":"node\.started"/.test(line) && /"port":(\d+)/.exec(line);
        if (m) { clearTimeout(timer); resolve(Number(m[1])); }
      });
    }
    proc.on("exit", (code) => { clearTimeout(timer); reject(new Error(`herald exited (${code}):\n${lines.join("\n")}`)); });
  });
  const p = await started;
  const server = {
    proc, port: p, http: `http://127.0.0.1:${p}`, lines,
    api: (method, path, body) => api(`http://127.0.0.1:${p}`, method, path, body),
    async stop(signal = "SIGKILL") {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = once(proc, "exit");
      proc.kill(signal);
      await exited;
    },
  };
  await eventually(async () => (await fetch(server.http + "/readyz").catch(() => null))?.status === 200,
                   "herald /readyz");
  return server;
}

/** Kill `server` and start a new `herald dev` on its port: a new in-memory engine (new epochs). */
export async function restartHerald(server, args = []) {
  await server.stop();
  return startHerald(args, { port: server.port });
}

/** A call to the server API; resolves with the parsed JSON body, throws on a non-2xx answer. */
export async function api(base, method, path, body) {
  const res = await fetch(base + path, {
    method, headers: { Authorization: `apikey ${API_KEY}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const reply = await res.json();
  if (!res.ok) throw new Error(`${method} ${path}: HTTP ${res.status} ${JSON.stringify(reply)}`);
  return reply;
}

/** Poll `check` (sync or async) until it is truthy; fail with `what` after `timeoutMs`. */
export async function eventually(check, what, timeoutMs = seconds(10)) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The next `type` event of `emitter` (a client or a subscription) that matches `pred`. */
export function nextEvent(emitter, type, pred = () => true, timeoutMs = seconds(10)) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { emitter.off(type, fn); reject(new Error(`no ${type} event in time`)); },
                             timeoutMs);
    const fn = (ev) => {
      if (!pred(ev)) return;
      clearTimeout(timer);
      emitter.off(type, fn);
      resolve(ev);
    };
    emitter.on(type, fn);
  });
}

/** Everything a client's listeners saw, for assertions: messages by channel, states, recoveries, errors. */
export function record(client) {
  const rec = { messages: [], states: [], recoveries: [], errors: [], subscribed: [] };
  client.on("message", (m) => rec.messages.push(m));
  client.on("state", (s) => rec.states.push(s));
  client.on("recovery", (r) => rec.recoveries.push(r));
  client.on("error", (e) => rec.errors.push(e));
  client.on("subscribed", (s) => rec.subscribed.push(s));
  rec.data = (channel) => rec.messages.filter((m) => m.channel === channel).map((m) => m.data);
  rec.offsets = (channel) => rec.messages.filter((m) => m.channel === channel).map((m) => m.offset);
  return rec;
}
