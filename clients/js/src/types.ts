// The shapes of what a Herald server sends (CONTRACT.md §4–§6) and of the client's own events.

/** A channel position: the last offset seen and the epoch it belongs to. */
export interface Position {
  offset: string;
  epoch: string;
}

/** A channel message: the envelope of CONTRACT §4. `from` is set when a user published it. */
export interface Message<T = unknown> {
  type: "message";
  channel: string;
  offset: string;
  epoch: string;
  /** Defaults to "message"; "chat" for direct messages, "notification" for POST /notify. */
  event: string;
  from?: string;
  data: T;
  /** Milliseconds since the Unix epoch at publish time. */
  ts: number;
}

/** The server's first frame on a WebSocket. */
export interface ConnectedFrame {
  type: "connected";
  client: string;
  user: string;
  node: string;
  ping_interval: number;
  channels: string[];
}

/** The reply to a subscribe. Over SSE only `type` and `channel` are known (the stream opened). */
export interface SubscribedReply {
  type: "subscribed";
  channel: string;
  epoch?: string;
  offset?: string;
  recovered?: boolean;
  missed?: number;
  id?: number;
}

export interface UnsubscribedReply { type: "unsubscribed"; channel: string; id?: number }
export interface PublishedReply { type: "published"; channel: string; offset: string; id?: number }
export interface SentReply { type: "sent"; offset: string; id?: number }
export interface RefreshedReply { type: "refreshed"; exp?: number; id?: number }
export interface PongReply { type: "pong"; id?: number }

/** One connection present in a channel. */
export interface PresenceClient {
  client: string;
  user: string;
  status?: string | null;
  info?: unknown;
  node?: string | null;
}

export interface WhoReply { type: "who"; channel: string; clients: PresenceClient[]; id?: number }

/** Presence counts of a channel (computed from `who`). */
export interface PresenceStats { channel: string; clients: number; users: number }

export interface HistoryReply<T = unknown> {
  type: "history";
  channel: string;
  epoch: string;
  offset: string;
  messages: Array<Message<T>>;
  id?: number;
}

/** Sent before a server-initiated graceful close: come back after `after_ms`. */
export interface ReconnectAdvisory {
  type: "reconnect";
  reason: "drain" | "rebalance" | "slow" | (string & {});
  after_ms: number;
}

export interface UserStatusFrame { type: "user_status"; userId: string; status: string; channel?: string }
export interface JoinFrame {
  type: "join"; channel: string; client: string; user: string; status?: string | null; info?: unknown;
  node?: string | null;
}
export interface LeaveFrame { type: "leave"; channel: string; client: string; user: string }

/** An error nobody's request was waiting for (an `error` frame, a lost subscription, 1009...). */
export interface ErrorEvent {
  type?: "error";
  /** The contract's code: 400, 403, 413, 429, 503; 1009 for a frame the server found too big; 0 local. */
  code: number;
  message: string;
  channel?: string;
  id?: number;
}

/**
 * The client could not get every message of `channel` since its last position: resync the
 * channel's state from the application's own source. `reason` is "not_recovered" (a resume
 * answered `recovered: false`, or SSE's `recovery` event) or "epoch_changed" (a live message came
 * with a new epoch: the history was lost).
 */
export interface RecoveryEvent {
  channel: string;
  recovered: false;
  reason: "not_recovered" | "epoch_changed";
  /** The position the client had. */
  previous?: Position;
  /** Where delivery goes on from (unknown over SSE). */
  epoch?: string;
  offset?: string;
}

export type ClientState = "connecting" | "connected" | "disconnected" | "closed";

/** A client state change; `code` is the close code for "disconnected" and "closed". */
export interface StateEvent {
  state: ClientState;
  code?: number;
  /** With "disconnected" / "closed": whether the client will reconnect on its own. */
  reconnect?: boolean;
  /** With "disconnected": the delay before the next attempt, ms. */
  delayMs?: number;
  /** The `after_ms` of a `reconnect` advisory the server sent before closing. */
  advisedMs?: number;
}

export type SubscriptionState = "unsubscribed" | "subscribing" | "subscribed";

export interface SubscriptionStateEvent { channel: string; state: SubscriptionState }

/** Events of the client (`client.on(name, fn)`): every channel's, and the connection's own. */
export interface ClientEvents {
  state: StateEvent;
  connected: ConnectedFrame;
  message: Message;
  subscribed: SubscribedReply;
  unsubscribed: UnsubscribedReply;
  recovery: RecoveryEvent;
  reconnect: ReconnectAdvisory;
  error: ErrorEvent;
  user_status: UserStatusFrame;
  join: JoinFrame;
  leave: LeaveFrame;
  published: PublishedReply;
  sent: SentReply;
  who: WhoReply;
  history: HistoryReply;
  refreshed: RefreshedReply;
  pong: PongReply;
}

/** Events of one subscription (`sub.on(name, fn)`). */
export interface SubscriptionEvents<T = unknown> {
  state: SubscriptionStateEvent;
  message: Message<T>;
  subscribed: SubscribedReply;
  recovery: RecoveryEvent;
  error: ErrorEvent;
  join: JoinFrame;
  leave: LeaveFrame;
  unsubscribed: UnsubscribedReply;
}

/** What `herald.msgpack` needs: `@msgpack/msgpack` fits (`import * as msgpack from "@msgpack/msgpack"`). */
export interface MsgpackCodec {
  encode(value: unknown): Uint8Array;
  decode(data: Uint8Array): unknown;
}

/** The parts of a WebSocket constructor the client uses (the browser's, Node ≥ 22's, or `ws`). */
export interface WebSocketLike {
  readonly readyState: number;
  readonly protocol: string;
  binaryType: string;
  // Handlers take `any`: the browser's, undici's and ws's event types differ (the client reads
  // `data` of a message event and `code` of a close event).
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: any) => void) | null;
  onclose: ((ev: any) => void) | null;
  onerror: ((ev: any) => void) | null;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** The parts of an EventSource constructor the client uses (the browser's, or `eventsource`). */
export interface EventSourceLike {
  readonly readyState: number;
  onopen: ((ev: any) => unknown) | null;
  onerror: ((ev: any) => unknown) | null;
  addEventListener(type: string, listener: (ev: any) => unknown): void;
  close(): void;
}
export type EventSourceConstructor = new (url: string) => EventSourceLike;

export interface ClientOptions {
  /** The node's base URL (http(s)://host[:port][/prefix]), or several, tried in turn. Default: the page's origin. */
  url?: string | string[];
  /** A JWT. Without one, `getToken` is asked before the first connection. */
  token?: string;
  /** Gives a new JWT: before the current one expires, and after the server refused it (close 4001). */
  getToken?: (() => string | Promise<string>) | null;
  /** "ws" (default: WebSocket, SSE when a WebSocket never opens) or "sse". */
  transport?: "ws" | "sse";
  /** With transport "ws": fall back to SSE when a WebSocket never opened twice in a row (default true). */
  fallback?: boolean;
  /** WebSocket subprotocol: "json" (herald.json, default) or "msgpack" (herald.msgpack). */
  codec?: "json" | "msgpack";
  /** The msgpack implementation for codec "msgpack"; default: `import("@msgpack/msgpack")`. */
  msgpack?: MsgpackCodec;
  /** The WebSocket constructor (Node 20: `ws`); default: the global one. */
  websocket?: WebSocketConstructor;
  /** The EventSource constructor (Node: `eventsource`); default: the global one. */
  eventsource?: EventSourceConstructor;
  /** Backoff: the first ceiling and the cap, ms (full jitter: a random part of min(max, min·2^n)). */
  minDelayMs?: number;
  maxDelayMs?: number;
  /** A request's time limit (waiting for a connection, then for the reply), ms. Default 10000. */
  timeoutMs?: number;
  /** How long a WebSocket may take to open and send `connected`, ms. Default 10000. */
  connectTimeoutMs?: number;
  /** Refresh the token this long before it expires (at most a fifth of its life), ms. Default 30000. */
  refreshMarginMs?: number;
  /** Random numbers in [0, 1) for the jitter (tests pass a fixed one). */
  random?: () => number;
}

export interface RequestOptions {
  /** Overrides the client's `timeoutMs` for this request. */
  timeoutMs?: number;
}

export interface HistoryOptions extends RequestOptions {
  /** Only messages after this position. */
  since?: Position | null;
  /** At most this many messages. */
  limit?: number | null;
}

export interface SubscribeOptions {
  /** Resume from a position saved earlier (a `recovery` event follows when the gap cannot be filled). */
  since?: Position | null;
}

/** Counters for monitoring and tests. */
export interface ClientStats {
  /** Transports opened. */
  connections: number;
  /** Messages dropped because their offset was already delivered. */
  duplicates: number;
  /** Messages dropped because they arrived before their channel's resume reply (they come again after it). */
  early: number;
  /** Recovery events delivered. */
  recoveries: number;
  /** WebSocket → SSE switches. */
  fallbacks: number;
  /** The latest reconnect delays, ms. */
  delays: number[];
}
