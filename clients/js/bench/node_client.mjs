// One herald-client connection holding N subscriptions; counts messages until EXPECTED arrived.
// Prints "ready" once every channel is subscribed, then one JSON line: messages, wall and CPU seconds
// from the first message to the last. Bounded: it exits after EXPECTED messages or TIMEOUT_S.
import WebSocket from "ws";
import { HeraldClient } from "../dist/index.js";

const { URL: url, TOKEN: token, CHANNELS = "1000", EXPECTED, CODEC = "json", TIMEOUT_S = "120" } = process.env;
const n = Number(CHANNELS), expected = Number(EXPECTED);
const client = new HeraldClient({ url, token, websocket: WebSocket, codec: CODEC, timeoutMs: 30000 });
let count = 0, t0 = 0, c0 = null;
const done = new Promise((resolve) => {
  client.on("message", () => {
    if (count++ === 0) { t0 = performance.now(); c0 = process.cpuUsage(); }
    if (count === expected) resolve();
  });
});
const subs = Array.from({ length: n }, (_, i) => client.subscribe(`bench:${i}`));
client.connect();
await Promise.all(subs.map((s) => s.ready(30000)));
console.log("ready");
const timer = setTimeout(() => { console.error(`timeout: ${count}/${expected}`); process.exit(2); }, Number(TIMEOUT_S) * 1000);
await done;
const wall = (performance.now() - t0) / 1000;
const cpu = process.cpuUsage(c0);
console.log(JSON.stringify({ client: "node", messages: count, wall_s: wall, cpu_s: (cpu.user + cpu.system) / 1e6,
                             duplicates: client.stats.duplicates }));
clearTimeout(timer);
client.close();
