// herald-client in Node against a real cluster (redis-server, a router, three nodes: processes
// started by tests/js/test_node_client.py, described in HERALD_CLUSTER) while a publisher keeps
// publishing through the router's API: a node killed with SIGKILL, a node drained with SIGTERM.
// Judged by what the application received: every acknowledged message once, in offset order.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import WebSocket from "ws";
import { HeraldClient } from "../dist/index.js";
import { api, eventually, makeToken, nextEvent, seconds } from "./helpers.mjs";

const cluster = JSON.parse(process.env.HERALD_CLUSTER || "null");
if (!cluster) throw new Error("HERALD_CLUSTER is not set: run these through tests/js/test_node_client.py");
const [n1, n2, n3] = cluster.nodes;
const clients = [];
after(() => { for (const c of clients) c.close(); });

/** Publishes round-robin to `channels` through the router, one request at a time, until stop(). */
function publisher(channels) {
  const acked = Object.fromEntries(channels.map((ch) => [ch, []]));
  let count = 0, stopped = false;
  const errors = [];
  const loop = (async () => {
    while (!stopped) {
      const channel = channels[count % channels.length];
      try {
        const reply = await api(cluster.api, "POST", "/api/publish", { channel, data: { n: count } });
        acked[channel].push(reply.offset);
        count++;
      } catch (err) {
        errors.push(String(err));
        if (errors.length > 20) throw new Error(`the publisher keeps failing: ${errors.slice(-3)}`);
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  return { acked, errors, get count() { return count; }, async stop() { stopped = true; await loop; } };
}

/** A client on `urls` holding `channels`; `got[channel]` is the offsets its application received. */
async function holder(name, urls, channels, options = {}) {
  const client = new HeraldClient({ url: urls, token: makeToken(name), websocket: WebSocket, minDelayMs: 100,
                                    ...options });
  clients.push(client);
  const got = Object.fromEntries(channels.map((ch) => [ch, []]));
  const events = [];
  client.on("state", (s) => events.push({ ...s, at: Date.now() }));
  client.on("reconnect", (r) => events.push({ advisory: r, at: Date.now() }));
  client.on("recovery", (r) => events.push({ recovery: r }));
  const subs = channels.map((ch) => client.subscribe(ch));
  for (const sub of subs) sub.on("message", (m) => got[m.channel].push(m.offset));
  client.connect();
  await Promise.all(subs);
  return { client, got, events };
}

function assertExactlyOnce(pub, h) {
  for (const [channel, offsets] of Object.entries(pub.acked)) {
    assert.deepEqual(h.got[channel], offsets, `${channel}: every acknowledged message once, in order`);
  }
}

async function delivered(pub, h) {
  await eventually(() => Object.entries(pub.acked).every(([ch, offs]) => h.got[ch].length >= offs.length),
                   "every acknowledged message", seconds(20));
}

test("kill -9 of a node: the client resumes on the other node with 0 lost and 0 duplicated", async () => {
  const channels = ["room:kill0", "room:kill1", "room:kill2", "room:kill3"];
  const h = await holder("kill-a", [n1.http, n2.http], channels);
  assert.equal(h.client.node, n1.id);
  const pub = publisher(channels);
  await eventually(() => pub.count >= 40, "40 acknowledged publishes");
  process.kill(n1.pid, "SIGKILL");
  await eventually(() => h.client.node === n2.id && h.client.state === "connected", "the move to the survivor");
  const moved = pub.count;
  await eventually(() => pub.count >= moved + 40, "40 more publishes");
  await pub.stop();
  await delivered(pub, h);
  await h.client.ping();
  assertExactlyOnce(pub, h);
  const closes = h.events.filter((e) => e.state === "disconnected");
  assert.deepEqual(closes.map((e) => e.code), [1006]);
  assert.ok(closes[0].delayMs < 100, "first rung of the backoff");
  assert.deepEqual(h.events.filter((e) => e.recovery), []);
  assert.equal(h.client.stats.connections, 2);
});

test("drain (SIGTERM): the advisory is honoured, 1012, a paced reconnect to the next node, 0 lost", async () => {
  const channels = ["room:drain0", "room:drain1"];
  const h = await holder("drain-a", [n2.http, n3.http], channels, { random: () => 0.5 });
  assert.equal(h.client.node, n2.id);
  const pub = publisher(channels);
  await eventually(() => pub.count >= 30, "30 acknowledged publishes");
  process.kill(n2.pid, "SIGTERM");
  await eventually(() => h.client.node === n3.id && h.client.state === "connected", "the move to the next node");
  const moved = pub.count;
  await eventually(() => pub.count >= moved + 30, "30 more publishes");
  await pub.stop();
  await delivered(pub, h);
  assertExactlyOnce(pub, h);

  const advisory = h.events.find((e) => e.advisory);
  assert.ok(advisory, "a reconnect advisory came before the close");
  assert.equal(advisory.advisory.reason, "drain");
  const i = h.events.findIndex((e) => e.state === "disconnected");
  const [closed, next] = [h.events[i], h.events[i + 1]];
  assert.equal(closed.code, 1012);
  assert.equal(closed.advisedMs, advisory.advisory.after_ms);
  assert.equal(closed.delayMs, advisory.advisory.after_ms + 50); // after_ms + random() * minDelayMs
  assert.equal(next.state, "connecting");
  assert.ok(next.at - closed.at >= closed.delayMs - 5, `paced: waited ${next.at - closed.at} ms`);
  assert.deepEqual(h.events.filter((e) => e.recovery), []);
});
