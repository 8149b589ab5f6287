// Wrong uses of the public API: each line after an @ts-expect-error must not compile.
// run.mjs compiles this file as it is (every directive must be used: each line is an error) and
// without the directives (it must fail, at exactly these lines) — so the types cannot decay into any.
import { HeraldClient } from "herald-client";

const client = new HeraldClient({ url: "http://localhost:8000" });
const sub = client.subscribe<{ text: string }>("room:1");

// @ts-expect-error a number as a channel
client.subscribe(42);
// @ts-expect-error a number as a channel of a request
client.publish(7, { text: "hi" });
// @ts-expect-error an unknown event name
client.on("mesage", () => {});
// @ts-expect-error an unknown subscription event name
sub.on("connected", () => {});
// @ts-expect-error a wrong payload field
client.on("message", (m) => console.log(m.chanel));
// @ts-expect-error a wrong payload field of the state event
client.on("state", (s) => console.log(s.status));
// @ts-expect-error a payload field of the wrong type
client.on("recovery", (r) => { const n: number = r.channel; console.log(n); });
// @ts-expect-error the typed data of a subscription
sub.on("message", (m) => console.log(m.data.txt));
// @ts-expect-error publish on a typed subscription with the wrong data
void sub.publish({ txt: "hi" });
// @ts-expect-error an unknown transport
new HeraldClient({ transport: "long-polling" });
// @ts-expect-error an unknown codec
new HeraldClient({ codec: "protobuf" });
// @ts-expect-error an unknown option
new HeraldClient({ urls: ["http://a"] });
// @ts-expect-error history since must be a position
void client.history("room:1", { since: "1-0" });
// @ts-expect-error the client state is a closed set
const state: "open" = client.state;
// @ts-expect-error the awaited subscribe() is the reply, not the handle
void client.subscribe("room:1").then((r) => r.unsubscribe());
// @ts-expect-error internals are not part of the types
client._ws;
console.log(state);
