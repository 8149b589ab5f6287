// A page's use of the public API (compiled by types-test/run.mjs with tsc --strict --noEmit).
import {
  HeraldClient, HeraldError, RequestTimeout, ServerError, type ClientState, type Message, type RecoveryEvent,
  type StateEvent, type Subscription, type SubscribedReply,
} from "herald-client";

interface ChatLine { text: string }

const client = new HeraldClient({
  url: "https://push.example.com",
  getToken: async () => (await (await fetch("/token")).json()).token as string,
  minDelayMs: 250,
  timeoutMs: 5000,
});

client.on("state", ({ state, code, reconnect, delayMs }: StateEvent) => {
  const s: ClientState = state;
  console.log(s, code ?? "-", reconnect === true, delayMs ?? 0);
});
client.on("connected", (f) => console.log(f.user, f.client, f.node, f.channels.join()));
client.on("message", (m: Message) => console.log(m.channel, m.offset, m.epoch, m.event, m.from ?? "backend", m.ts));
client.on("recovery", (r: RecoveryEvent) => { if (!r.recovered) console.log("resync", r.channel, r.reason); });
client.on("error", (e) => console.log(e.code, e.message, e.channel));
client.on("user_status", (u) => console.log(u.userId, u.status));
client.on("join", (j) => console.log(j.channel, j.user)).on("leave", (l) => console.log(l.channel, l.client));
client.once("reconnect", (a) => console.log(a.reason, a.after_ms));

// Today's /client.js style: subscribe() awaited for the `subscribed` reply.
async function legacy(): Promise<void> {
  const reply: SubscribedReply = await client.subscribe("room:lobby");
  console.log(reply.recovered, reply.missed, reply.epoch);
  client.subscribe("news:x").catch((err: unknown) => console.log(err));
}

// The handle: typed data, its own events and state, requests naming its channel.
const room: Subscription<ChatLine> = client.subscribe<ChatLine>("room:42", { since: { offset: "1-0", epoch: "e" } });
room.on("message", (m) => console.log(m.data.text.toUpperCase()));
room.on("subscribed", (r) => console.log(r.channel));
room.on("recovery", (r) => console.log(r.previous?.offset, r.epoch));
room.on("state", ({ state }) => { if (state === "subscribed") console.log("live"); });
room.on("error", (e) => console.log(e.code));

async function requests(): Promise<void> {
  await room.ready(3000);
  const published = await room.publish({ text: "hi" }, "chat", { timeoutMs: 2000 });
  console.log(published.offset);
  const page = await room.history({ limit: 50 });
  for (const m of page.messages) console.log(m.data.text);
  const since = await client.history("room:42", { since: room.position, limit: 10 });
  console.log(since.epoch, since.offset);
  const who = await client.who("room:42");
  console.log(who.clients.map((c) => c.user));
  const stats = await room.presenceStats();
  console.log(stats.clients + stats.users);
  await client.setStatus("away");
  const sent = await client.chat("bob", "hello");
  console.log(sent.offset);
  const refreshed = await client.refresh();
  console.log(refreshed.exp);
  await client.ping({ timeoutMs: 1000 });
  await room.unsubscribe();
  try {
    await client.publish("room:1", { any: "json" });
  } catch (err) {
    if (err instanceof ServerError && err.code === 403) console.log("not allowed");
    else if (err instanceof RequestTimeout) console.log("slow");
    else if (err instanceof HeraldError) console.log(err.code);
  }
  console.log(client.positions()["room:42"]?.offset, client.stats.duplicates, client.state, client.transport);
}

client.connect();
void legacy();
void requests();
client.close();
