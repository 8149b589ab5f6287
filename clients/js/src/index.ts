// herald-client: the JavaScript/TypeScript client of Herald (browsers and Node ≥ 20).
//
//   import { HeraldClient } from "herald-client";      // in a page served by a node: "/client.js"
//   const client = new HeraldClient({ url: "https://push.example.com", getToken });
//   const room = client.subscribe("room:42");
//   room.on("message", (m) => render(m.data));
//   room.on("recovery", () => reloadRoom());           // a gap the server could not fill
//   client.connect();

export { HeraldClient } from "./client.js";
export { Subscription } from "./subscription.js";
export { ClientClosed, ConnectionLost, HeraldError, NotSupported, RequestTimeout, ServerError } from "./errors.js";
export { compareOffsets } from "./policy.js";
export type * from "./types.js";
