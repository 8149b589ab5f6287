// herald-client in Node against real `herald dev` processes (run by tests/js/test_node_client.py,
// or by hand: `npm test` with herald on PATH's python3).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { EventSource } from "eventsource";
import WebSocket from "ws";
import { ClientClosed, HeraldClient, NotSupported, RequestTimeout, ServerError } from "../dist/index.js";
import { eventually, makeToken, nextEvent, record, restartHerald, seconds, startHerald } from "./helpers.mjs";

const clients = [];
/** A client for this test file: Node's `ws` and `eventsource`, closed at the end whatever happened. */
function newClient(options) {
  const c = new HeraldClient({ websocket: WebSocket, eventsource: EventSource, minDelayMs: 100, maxDelayMs: 1000,
                               ...options });
  clients.push(c);
  return c;
}

async function publish(server, channel, values) {
  const offsets = [];
  for (const n of values) offsets.push((await server.api("POST", "/api/publish", { channel, data: { n } })).offset);
  return offsets;
}

after(() => { for (const c of clients) c.close(); });

const range = (a, b) => Array.from({ length: b - a }, (_, i) => a + i);

describe("against one herald dev", () => {
  let server;
  before(async () => { server = await startHerald(); });
  after(async () => { await server?.stop(); });

  for (const codec of ["json", "msgpack"]) {
    test(`subscribes, receives in order, publishes and answers requests over ${codec}`, async () => {
      const channel = `room:order-${codec}`;
      const client = newClient({ url: server.http, token: makeToken(`alice-${codec}`), codec });
      const rec = record(client);
      const room = client.subscribe(channel);
      const got = [];
      room.on("message", (m) => got.push(m));
      assert.equal(room.state, "subscribing");
      client.connect();
      const reply = await room;
      assert.equal(reply.type, "subscribed");
      assert.equal(reply.channel, channel);
      assert.equal(room.state, "subscribed");
      assert.equal(client.state, "connected");
      assert.equal(client._ws.protocol, codec === "msgpack" ? "herald.msgpack" : "herald.json");
      assert.equal(client.user, `alice-${codec}`);

      // From the server API: every message once, in offset order.
      const offsets = await publish(server, channel, range(0, 20));
      await eventually(() => got.length >= 20, "20 messages");
      assert.deepEqual(got.map((m) => m.data), range(0, 20).map((n) => ({ n })));
      assert.deepEqual(got.map((m) => m.offset), offsets);
      assert.ok(got.every((m) => m.event === "message" && m.epoch === reply.epoch && typeof m.ts === "number"));
      assert.deepEqual(rec.data(channel), got.map((m) => m.data)); // the client-wide event too

      // From the client (the token's `publish` claim allows room:*).
      const published = await room.publish({ text: "hi" }, "chat");
      assert.equal(published.type, "published");
      await eventually(() => got.length === 21, "our own message");
      assert.equal(got[20].offset, published.offset);
      assert.equal(got[20].event, "chat");
      assert.equal(got[20].from, `alice-${codec}`);

      const last5 = await room.history({ limit: 5 });
      assert.equal(last5.type, "history");
      assert.equal(last5.messages.length, 5);
      assert.deepEqual(last5.messages.map((m) => m.offset), got.slice(16).map((m) => m.offset));
      const since = await client.history(channel, { since: { offset: got[9].offset, epoch: got[9].epoch } });
      assert.deepEqual(since.messages.map((m) => m.offset), got.slice(10).map((m) => m.offset));
      assert.deepEqual(room.position, { offset: published.offset, epoch: reply.epoch });

      await client.setStatus("away");
      const who = await room.presence();
      assert.deepEqual(who.clients.map((c) => [c.user, c.status]), [[`alice-${codec}`, "away"]]);
      assert.deepEqual(await client.presenceStats(channel), { channel, clients: 1, users: 1 });
      assert.equal((await client.ping()).type, "pong");

      // Refusals are typed, carry the contract's code, and leave the connection up.
      const secret = client.subscribe("secret:x");
      await assert.rejects(secret.ready(), (e) => e instanceof ServerError && e.code === 403);
      assert.equal(secret.state, "unsubscribed");
      await assert.rejects(client.publish("news:x", 1), (e) => e instanceof ServerError && e.code === 403);
      await assert.rejects(client.subscribe("bad channel!").ready(), (e) => e instanceof ServerError && e.code === 400);
      assert.equal(client.state, "connected");
      assert.deepEqual(rec.errors, []);
      assert.equal(client.stats.connections, 1);

      await room.unsubscribe();
      assert.equal(room.state, "unsubscribed");
      await publish(server, channel, [99]);
      await client.ping(); // a round trip after the publish: nothing more arrived for the channel
      assert.equal(got.length, 21);
      client.close();
      assert.equal(client.state, "closed");
    });
  }

  test("a dropped connection (4008) resumes every channel with nothing lost or repeated", async () => {
    const channel = "news:resume";
    const client = newClient({ url: server.http, token: makeToken("bob"), random: () => 1 });
    const rec = record(client);
    const sub = client.subscribe(channel);
    client.connect();
    const first = await sub;
    await publish(server, channel, range(0, 5));
    await eventually(() => rec.data(channel).length === 5, "5 messages");
    const down = nextEvent(client, "state", (s) => s.state === "disconnected");
    await server.api("POST", "/api/disconnect", { user: "bob", code: 4008 });
    const state = await down;
    assert.equal(state.code, 4008);
    assert.equal(state.reconnect, true);
    assert.equal(state.delayMs, 100); // random() = 1: the whole first rung
    await publish(server, channel, range(5, 10)); // while the client is away or coming back
    const resumed = await nextEvent(sub, "subscribed");
    await eventually(() => rec.data(channel).length >= 10, "10 messages");
    await client.ping();
    assert.deepEqual(rec.data(channel), range(0, 10).map((n) => ({ n })));
    assert.equal(resumed.recovered, true);
    assert.equal(resumed.epoch, first.epoch);
    assert.ok(resumed.missed >= 1, "the resume filled a gap");
    assert.deepEqual(rec.recoveries, []);
    assert.equal(client.stats.connections, 2);
    client.close();
  });

  for (const code of [1000, 4003]) {
    test(`close code ${code} is final: no reconnect`, async () => {
      const user = `final-${code}`;
      const client = newClient({ url: server.http, token: makeToken(user) });
      client.connect();
      await nextEvent(client, "state", (s) => s.state === "connected");
      const ping = client.ping();
      const closed = nextEvent(client, "state", (s) => s.state === "closed");
      await server.api("POST", "/api/disconnect", { user, code });
      assert.deepEqual(await closed, { state: "closed", code, reconnect: false });
      await ping.catch(() => {});
      await assert.rejects(client.ping(), ClientClosed);
      assert.equal(client.stats.connections, 1);
    });
  }

  test("4001 asks getToken for a new token and reconnects; the same token again stops the client", async () => {
    let calls = 0;
    const client = newClient({ url: server.http, getToken: () => makeToken("hank", { jti: String(++calls) }) });
    client.connect();
    await nextEvent(client, "connected");
    assert.equal(calls, 1);
    const again = nextEvent(client, "connected");
    await server.api("POST", "/api/disconnect", { user: "hank", code: 4001 });
    await again;
    assert.equal(calls, 2);
    assert.equal(client.stats.connections, 2);
    client.close();

    const token = makeToken("ivy");
    const stuck = newClient({ url: server.http, getToken: () => token });
    stuck.connect();
    await nextEvent(stuck, "connected");
    const closed = nextEvent(stuck, "state", (s) => s.state === "closed");
    await server.api("POST", "/api/disconnect", { user: "ivy", code: 4001 });
    assert.equal((await closed).code, 4001);
    assert.equal(stuck.stats.connections, 1);
  });

  test("a token about to expire is refreshed through getToken on the open connection", async () => {
    const first = makeToken("jill", { ttl: 3 });
    const exp = JSON.parse(Buffer.from(first.split(".")[1], "base64url")).exp;
    let calls = 0;
    const client = newClient({ url: server.http, token: first,
                               getToken: () => { calls++; return makeToken("jill", { ttl: 600 }); } });
    const rec = record(client);
    client.connect();
    await nextEvent(client, "connected");
    const refreshed = await nextEvent(client, "refreshed", () => true, seconds(5));
    assert.ok(refreshed.exp > exp, "the server took the new token");
    assert.equal(calls, 1);
    // Past the first token's expiry the connection is still the same one.
    await eventually(() => Date.now() > exp * 1000 + 500, "the first token to expire", seconds(5));
    await client.ping();
    assert.equal(client.stats.connections, 1);
    assert.deepEqual(rec.states.map((s) => s.state), ["connecting", "connected"]);
    client.close();
  });

  test("a frame over the server's limit: 1009 is reported, the request fails, the client reconnects", async () => {
    const client = newClient({ url: server.http, token: makeToken("big") });
    const rec = record(client);
    client.connect();
    await nextEvent(client, "connected");
    const again = nextEvent(client, "connected");
    await assert.rejects(client.publish("room:big", "x".repeat(70 * 1024)), (e) => e.code === 1009);
    await again;
    assert.deepEqual(rec.errors.map((e) => e.code), [1009]);
    assert.deepEqual(rec.states.filter((s) => s.state === "disconnected").map((s) => [s.code, s.reconnect]),
                     [[1009, true]]);
    client.close();
  });

  test("once() listens to one event, and off() cancels it", async () => {
    const client = newClient({ url: server.http, token: makeToken("once") });
    const seen = [];
    const cancelled = () => seen.push("cancelled");
    client.once("state", (s) => seen.push(s.state)).once("state", cancelled).off("state", cancelled);
    client.connect();
    await nextEvent(client, "connected");
    assert.deepEqual(seen, ["connecting"]);
    client.close();
  });

  test("a request waits for a connection, within its timeout", async () => {
    // Nothing listens there (and no SSE fallback: a refused port looks like a stripped upgrade).
    const client = newClient({ url: "http://127.0.0.1:9", token: makeToken("nobody"), fallback: false });
    client.connect();
    await assert.rejects(client.ping({ timeoutMs: 300 }), RequestTimeout);
    client.close();
    await assert.rejects(client.ping(), ClientClosed);
  });

  test("SSE in Node (eventsource): subscribe, receive, add a channel with the cursor; requests are refused", async () => {
    const [a, b] = ["news:sse-a", "news:sse-b"];
    const client = newClient({ url: server.http, token: makeToken("sam"), transport: "sse" });
    const rec = record(client);
    const subA = client.subscribe(a);
    client.connect();
    assert.deepEqual(await subA, { type: "subscribed", channel: a });
    assert.equal(client.transport, "sse");
    await publish(server, a, range(0, 5));
    await eventually(() => rec.data(a).length === 5, "5 messages over SSE");
    const subB = client.subscribe(b); // a new stream, resuming `a` from the cursor
    await subB;
    assert.equal(subA.state, "subscribed");
    await publish(server, a, range(5, 8));
    await publish(server, b, range(0, 3));
    await eventually(() => rec.data(a).length >= 8 && rec.data(b).length >= 3, "both channels");
    assert.deepEqual(rec.data(a), range(0, 8).map((n) => ({ n })));
    assert.deepEqual(rec.data(b), range(0, 3).map((n) => ({ n })));
    await assert.rejects(client.publish(a, 1), NotSupported);
    assert.deepEqual(rec.errors, []);
    assert.deepEqual(rec.recoveries, []);
    client.close();
  });

  test("falls back to SSE when a WebSocket never opens", async () => {
    /** What a proxy that strips the upgrade looks like from the client: closed, never opened. */
    class NeverOpens {
      constructor() {
        this.readyState = 0;
        this.protocol = "";
        setTimeout(() => { this.readyState = 3; this.onclose?.({ code: 1006, reason: "" }); }, 5);
      }
      send() { throw new Error("not open"); }
      close() {}
    }
    const channel = "news:fallback";
    const client = newClient({ url: server.http, token: makeToken("fay"), websocket: NeverOpens });
    const rec = record(client);
    const sub = client.subscribe(channel);
    client.connect();
    assert.deepEqual(await sub, { type: "subscribed", channel });
    assert.equal(client.transport, "sse");
    assert.equal(client.stats.fallbacks, 1);
    await publish(server, channel, range(0, 3));
    await eventually(() => rec.data(channel).length === 3, "3 messages after the fallback");
    assert.deepEqual(rec.states.filter((s) => s.state === "disconnected").map((s) => s.code), [1006, 1006]);
    client.close();
  });
});

describe("across a herald dev restart", () => {
  let server;
  after(async () => { await server?.stop(); });

  for (const transport of ["ws", "sse"]) {
    test(`the lost history is reported as recovered:false, then delivery goes on (${transport})`, async () => {
      server = await startHerald(["--sse-retry-ms", "100"]);
      const channel = `news:restart-${transport}`;
      const client = newClient({ url: server.http, token: makeToken(`rita-${transport}`), transport });
      const sub = client.subscribe(channel);
      const got = [], recoveries = [];
      sub.on("message", (m) => got.push(m.data));
      sub.on("recovery", (r) => recoveries.push(r));
      client.connect();
      const first = await sub;
      await publish(server, channel, range(0, 3));
      await eventually(() => got.length === 3, "3 messages");
      const before = sub.position;
      const recovery = nextEvent(sub, "recovery");
      server = await restartHerald(server, ["--sse-retry-ms", "100"]);
      const ev = await recovery;
      assert.equal(ev.channel, channel);
      assert.equal(ev.recovered, false);
      assert.equal(ev.reason, "not_recovered");
      if (transport === "ws") {
        assert.deepEqual(ev.previous, before);
        assert.notEqual(ev.epoch, first.epoch);
      }
      await eventually(() => client.state === "connected" && sub.state === "subscribed", "connected again");
      await publish(server, channel, range(3, 6));
      await eventually(() => got.length === 6, "new messages after the restart");
      assert.deepEqual(got, range(0, 6).map((n) => ({ n })));
      assert.equal(recoveries.length, 1); // (over SSE the personal channel is reported too)
      client.close();
      await server.stop();
    });
  }
});

describe("against a rate-limited herald dev", () => {
  let server;
  before(async () => { server = await startHerald(["--client-rate", "20", "--client-burst", "5"]); });
  after(async () => { await server?.stop(); });

  test("subscribes refused with 429 (30 channels at once) are sent again later until every one is live", async () => {
    const client = newClient({ url: server.http, token: makeToken("many"), minDelayMs: 200 });
    const rec = record(client);
    const subs = range(0, 30).map((i) => client.subscribe(`news:many-${i}`));
    client.connect();
    await Promise.all(subs.map((s) => s.ready(seconds(15))));
    assert.ok(subs.every((s) => s.state === "subscribed"));
    assert.deepEqual(rec.errors, []);
    await publish(server, "news:many-29", [1]);
    await eventually(() => rec.data("news:many-29").length === 1, "a message on the last channel");
    client.close();
  });
});

test("too many connections for the user (4029): the reconnect starts a few rungs up the backoff", async () => {
  const server = await startHerald(["--max-connections-per-user", "1"]);
  try {
    const first = newClient({ url: server.http, token: makeToken("solo") });
    first.connect();
    await nextEvent(first, "connected");
    const second = newClient({ url: server.http, token: makeToken("solo"), random: () => 1, fallback: false });
    second.connect();
    const refused = await nextEvent(second, "state", (s) => s.state === "disconnected");
    assert.equal(refused.code, 4029);
    assert.equal(refused.reconnect, true);
    assert.equal(refused.delayMs, 800); // 100 ms · 2^3: not at once (1013 is the same)
    second.close();
    first.close();
  } finally {
    await server.stop();
  }
});
