// A Node service: `ws` for the WebSocket, `eventsource` for SSE, msgpack as the codec.
import { EventSource } from "eventsource";
import * as msgpack from "@msgpack/msgpack";
import WebSocket from "ws";
import { HeraldClient, type ClientOptions } from "herald-client";

const options: ClientOptions = {
  url: ["http://node-a:8000", "http://node-b:8000"],
  token: process.env.HERALD_TOKEN ?? "",
  websocket: WebSocket,
  eventsource: EventSource,
  codec: "msgpack",
  msgpack,
  random: () => 0.5,
};
const client = new HeraldClient(options);
const sse = new HeraldClient({ ...options, transport: "sse", codec: "json" });
const sub = client.subscribe<{ price: number }>("news:ticks");
sub.on("message", (m) => console.log(m.data.price.toFixed(2)));
client.connect();
sse.connect();
