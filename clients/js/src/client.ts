// HeraldClient: one connection to a Herald node (CONTRACT.md §4–§6), kept up for the application.
//
// WebSocket (subprotocol herald.json, or herald.msgpack) is the default transport; SSE is used
// when asked for, or when a WebSocket never opened twice in a row. The client remembers the last
// offset/epoch of every channel, resumes them after each reconnect, drops duplicates, reports
// gaps it cannot fill (`recovery`), and reconnects by the close-code table of CONTRACT §5 with
// full-jitter backoff — the way the Python SDK (herald.client) does.

import { Emitter } from "./emitter.js";
import { ClientClosed, ConnectionLost, HeraldError, NotSupported, RequestTimeout, ServerError } from "./errors.js";
import { backoffDelay, compareOffsets, jwtClaims, reactionFor, refreshDelay, SLOW_DOWN_ATTEMPT } from "./policy.js";
import { Subscription } from "./subscription.js";
import type {
  ClientEvents, ClientOptions, ClientState, ClientStats, ConnectedFrame, EventSourceConstructor, EventSourceLike,
  HistoryOptions, HistoryReply, Message, MsgpackCodec, PongReply, Position, PresenceStats, PublishedReply,
  ReconnectAdvisory, RecoveryEvent, RefreshedReply, RequestOptions, SentReply, StateEvent, SubscribedReply,
  SubscribeOptions, UnsubscribedReply, WebSocketConstructor, WebSocketLike, WhoReply,
} from "./types.js";

// "error" is also the name of EventSource's own connection-error event; see _openSse.
const SSE_EVENTS = ["message", "chat", "notification", "recovery", "reconnect", "user_status", "join", "leave",
                    "error"];
const MSGPACK = "@msgpack/msgpack";

type Frame = Record<string, any>;

/** @internal One channel the client knows: held by the application and/or by the server. */
interface ChannelState {
  subscribed: boolean;      // the application holds it
  auto: boolean;            // the server subscribed the connection to it (the personal channel)
  offset: string | null;    // the last delivered position
  epoch: string | null;
  live: boolean;            // subscribed on the current connection: its messages are accepted
  inflight: boolean;        // a subscribe is in flight on the current connection
  asked: Position | null;   // the `since` of that subscribe
  retry: number;            // resumes refused with 429/5xx in a row
  sub: Subscription<any> | null;
}

interface Pending {
  msg: Frame;
  resolve(reply: any): void;
  reject(err: HeraldError): void;
  timer?: ReturnType<typeof setTimeout>;
}

function parseJson(text: string): Frame | null {
  try { const v: unknown = JSON.parse(text); return v && typeof v === "object" ? v as Frame : null; }
  catch { return null; }
}

/** `msg` without its undefined keys (msgpack would send them as nil). */
function clean(msg: Frame): Frame {
  const out: Frame = {};
  for (const k in msg) if (msg[k] !== undefined) out[k] = msg[k];
  return out;
}

export class HeraldClient extends Emitter<ClientEvents> {
  token: string;
  getToken: (() => string | Promise<string>) | null;
  minDelayMs: number;
  maxDelayMs: number;
  timeoutMs: number;
  random: () => number;
  /** "ws" or "sse": the transport in use (it becomes "sse" on fallback). */
  transport: "ws" | "sse";
  /** Extra SSE event names to listen for (custom `event` values of messages). */
  sseEvents: string[] = [];
  state: ClientState = "closed";
  /** From the server's `connected` frame (over SSE, `user` comes from the token). */
  user: string | null = null;
  clientId: string | null = null;
  node: string | null = null;
  readonly stats: ClientStats = { connections: 0, duplicates: 0, early: 0, recoveries: 0, fallbacks: 0, delays: [] };

  /** @internal */ channels = new Map<string, ChannelState>();
  /** @internal */ _ws: WebSocketLike | null = null;
  /** @internal */ _es: EventSourceLike | null = null;
  private _opts: ClientOptions;
  private _urls: string[];
  private _urlIndex = 0;
  private _pending = new Map<number, Pending>();
  private _queued: Pending[] = [];       // requests waiting for a connection
  private _nextId = 1;
  private _ready = false;                // WebSocket open and `connected` received
  private _stopped = true;               // no connect() yet, close() called, or a final close code
  private _seq = 0;                      // bumped by every open and close: stale callbacks see it
  private _attempt = 0;                  // backoff exponent
  private _wsFails = 0;                  // WebSockets in a row that never opened
  private _wsEverOpened = false;
  private _reopenQueued = false;
  private _advice: ReconnectAdvisory | null = null;
  private _status: string | null = null; // last setStatus(), sent again after a reconnect
  private _lastEventId = "";             // SSE cursor
  private _needToken: boolean;           // call getToken() before the next open
  private _refused: string | null = null; // the token a 4001 refused
  private _mp: MsgpackCodec | null = null;
  private _timer?: ReturnType<typeof setTimeout>;
  private _refreshTimer?: ReturnType<typeof setTimeout>;
  private _connectTimer?: ReturnType<typeof setTimeout>; // `connected` in time, then liveness
  private _pings = false;                // the WebSocket shows the server's pings (Node's ws does)
  private _lastSeen = 0;                 // when the last frame or ping came
  private _retries = new Set<ReturnType<typeof setTimeout>>(); // subscribes to send again

  constructor(options: ClientOptions = {}) {
    super();
    const o = this._opts = options;
    this.token = o.token || "";
    this.getToken = o.getToken || null;
    this.minDelayMs = o.minDelayMs ?? 500;
    this.maxDelayMs = o.maxDelayMs ?? 20000;
    this.timeoutMs = o.timeoutMs ?? 10000;
    this.random = o.random || Math.random;
    const url = o.url || (globalThis as any).location?.origin;
    if (!url || !url.length) throw new HeraldError("HeraldClient: a url is needed outside a browser page");
    this._urls = typeof url === "string" ? [url] : [...url];
    this.transport = o.transport === "sse" || !this._WebSocket() ? "sse" : "ws";
    this._needToken = !this.token;
  }

  /** The base URL of the node in use (or next to be tried). */
  get url(): string {
    return this._urls[this._urlIndex % this._urls.length];
  }

  // ---- lifecycle -------------------------------------------------------------------------
  /** Start connecting, and keep reconnecting until close() or a final close code. */
  connect(): this {
    if (this._stopped) { this._stopped = false; this._open(); }
    return this;
  }

  /** Close the connection and stop; pending requests fail. Held channels stay for a later connect(). */
  close(): void {
    this._stopped = true;
    this._seq++;
    clearTimeout(this._timer); clearTimeout(this._refreshTimer);
    this._teardown();
    this._connectionEnded();
    this._failAll(new ClientClosed("client closed", 1000));
    this._setState({ state: "closed", code: 1000, reconnect: false });
  }

  /** The last delivered position of every channel (persist them to resume later with `since`). */
  positions(): Record<string, Position> {
    const out: Record<string, Position> = {};
    for (const [ch, st] of this.channels) if (st.offset && st.epoch) out[ch] = { offset: st.offset, epoch: st.epoch };
    return out;
  }

  private _WebSocket(): WebSocketConstructor | undefined {
    return this._opts.websocket || (globalThis as any).WebSocket;
  }

  private _EventSource(): EventSourceConstructor | undefined {
    return this._opts.eventsource || (globalThis as any).EventSource;
  }

  private _setState(ev: StateEvent): void {
    this.state = ev.state;
    this._emit("state", ev);
  }

  private async _open(): Promise<void> {
    clearTimeout(this._timer);
    if (this._stopped) return;
    const seq = ++this._seq;
    this._setState({ state: "connecting" });
    if (this._needToken && this.getToken) {
      let token: string;
      try {
        token = await this.getToken();
      } catch (err) {
        if (seq !== this._seq) return;
        this._emit("error", { code: 0, message: `getToken failed: ${err}` });
        return this._retry(this._backoff());
      }
      if (seq !== this._seq) return;
      if (!token || token === this._refused) {
        return this._final(4001, "the token was refused and getToken gave no new one");
      }
      this.token = token;
      this._needToken = false;
      this._refused = null;
    }
    if (this._opts.codec === "msgpack" && !this._mp && this.transport === "ws") {
      await this._loadMsgpack();
      if (seq !== this._seq) return;
    }
    if (this.transport === "sse") this._openSse(); else this._openWs();
  }

  private async _loadMsgpack(): Promise<void> {
    try {
      // A variable specifier: bundlers leave the optional peer dependency alone (pass `msgpack` to bundle it).
      const name = MSGPACK;
      this._mp = this._opts.msgpack || await import(/* webpackIgnore: true */ /* @vite-ignore */ name);
    } catch (err) {
      this._emit("error", { code: 0, message: `codec "msgpack" needs ${MSGPACK} (or the msgpack option): ${err}` });
    }
  }

  private _retry(delay: number): void {
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._open(), delay);
  }

  /** Full jitter: random() * min(max, min * 2^attempt); each call grows the attempt. */
  private _backoff(): number {
    return backoffDelay(this._attempt++, this.minDelayMs, this.maxDelayMs, this.random);
  }

  private _endpoint(path: string, params: Array<[string, string]>): URL {
    const base = this.url.replace(/^ws/, "http").replace(/\/(ws|events)\/?$/, "");
    const url = new URL(path, base.endsWith("/") ? base : base + "/"); // keeps a path prefix
    for (const [key, value] of params) url.searchParams.append(key, value);
    return url;
  }

  /** Drop the current transport without triggering reconnect logic. */
  private _teardown(): void {
    const ws = this._ws, es = this._es;
    this._ws = this._es = null;
    this._ready = false;
    clearTimeout(this._connectTimer);
    for (const timer of this._retries) clearTimeout(timer);
    this._retries.clear();
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      ws.onerror = () => {}; // `ws` (Node) throws an 'error' nobody listens to
      if (ws.readyState < 2) ws.close(1000);
    }
    if (es) es.close();
  }

  /** The connection is gone: nothing is live; in-flight subscribes go out again with the next one. */
  private _connectionEnded(): void {
    for (const st of this.channels.values()) {
      st.live = st.inflight = false;
      st.asked = null;
      if (st.sub?.state === "subscribed") st.sub._setState("subscribing");
    }
  }

  private _failAll(err: HeraldError): void {
    for (const p of [...this._pending.values(), ...this._queued.splice(0)]) p.reject(err);
    this._pending.clear();
    for (const st of this.channels.values()) st.sub?._fail(err, false);
  }

  private _final(code: number, message = "connection closed"): void {
    this._stopped = true;
    this._seq++;
    this._failAll(new ClientClosed(message, code));
    this._setState({ state: "closed", code, reconnect: false });
  }

  // ---- WebSocket transport ---------------------------------------------------------------
  private _openWs(): void {
    this._teardown();
    const url = this._endpoint("ws", this.token ? [["token", this.token]] : []);
    url.protocol = url.protocol.replace(/^http/, "ws");
    const WS = this._WebSocket()!;
    let ws: WebSocketLike, opened = false;
    try {
      ws = new WS(url.href, this._mp ? "herald.msgpack" : "herald.json");
    } catch {
      return this._onWsClose(1006, false);
    }
    this._ws = ws;
    ws.binaryType = "arraybuffer";
    ws.onopen = () => { opened = true; };
    ws.onerror = () => {};
    ws.onmessage = (ev) => {
      if (this._ws !== ws) return;
      this._lastSeen = Date.now();
      this._onFrame(this._decode(ev.data));
    };
    const emitter = ws as unknown as { on?: (name: string, fn: () => void) => void };
    this._pings = typeof emitter.on === "function";
    if (this._pings) emitter.on!("ping", () => { this._lastSeen = Date.now(); });
    ws.onclose = (ev) => { if (this._ws === ws) this._onWsClose(ev.code, opened); };
    this._connectTimer = setTimeout(() => {
      if (this._ws !== ws || this._ready) return;
      this._teardown(); // no `connected` in time: give up on this one
      this._onWsClose(1006, opened);
    }, this._opts.connectTimeoutMs ?? 10000);
  }

  private _decode(data: unknown): Frame | null {
    if (typeof data === "string") return parseJson(data);
    if (!this._mp) return null;
    try {
      const bytes = ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
        : new Uint8Array(data as ArrayBuffer);
      const v = this._mp.decode(bytes);
      return v && typeof v === "object" ? v as Frame : null;
    } catch {
      return null;
    }
  }

  private _send(obj: Frame): boolean {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) return false;
    ws.send(this._mp && ws.protocol === "herald.msgpack" ? this._mp.encode(obj) : JSON.stringify(obj));
    return true;
  }

  private _onWsClose(code: number, opened: boolean): void {
    const advice = this._advice;
    this._ws = null;
    this._ready = false;
    this._advice = null;
    clearTimeout(this._connectTimer); clearTimeout(this._refreshTimer);
    for (const timer of this._retries) clearTimeout(timer);
    this._retries.clear();
    this._settleInFlight(code);
    this._connectionEnded();
    if (this._stopped) return;
    if (!opened) {
      this._wsFails += 1;
      if (this.getToken) this._needToken = true; // a refused handshake may be an expired token (HTTP 401)
      if (this._opts.fallback !== false && this._wsFails >= 2 && !this._wsEverOpened && this._EventSource()) {
        this.transport = "sse";
        this.stats.fallbacks++;
        for (const p of this._queued.splice(0)) p.reject(new NotSupported(`${p.msg.type} is not available over SSE`));
        this._setState({ state: "disconnected", code, reconnect: true, delayMs: 0 });
        return this._retry(0);
      }
    }
    const [action, rotate] = reactionFor(code);
    if (action === "stop" || (action === "reauth" && !this.getToken)) return this._final(code);
    let delay: number;
    if (action === "advised") { // drain / rebalance: come back when the advisory said, plus jitter
      delay = Math.max(0, advice?.after_ms || 0) + this.random() * this.minDelayMs;
    } else {
      if (action === "reauth") { this._needToken = true; this._refused = this.token; }
      if (action === "slow_down") this._attempt = Math.max(this._attempt, SLOW_DOWN_ATTEMPT);
      if (action === "bug") this._emit("error", { code, message: "the server closed with 1009: a frame was over its size limit" });
      delay = this._backoff();
    }
    if (rotate) this._urlIndex++;
    this.stats.delays.push(delay);
    if (this.stats.delays.length > 100) this.stats.delays.shift();
    const ev: StateEvent = { state: "disconnected", code, reconnect: true, delayMs: delay };
    if (advice) ev.advisedMs = advice.after_ms;
    this._setState(ev);
    this._retry(delay);
  }

  /** Requests in flight when the socket closed: subscribes and presence are sent again after the reconnect. */
  private _settleInFlight(code: number): void {
    const err = new ConnectionLost("connection closed", code);
    for (const p of this._pending.values()) {
      if (p.msg.type === "unsubscribe") p.resolve({ type: "unsubscribed", channel: p.msg.channel });
      else if (p.msg.type !== "subscribe") p.reject(err);
    }
    this._pending.clear();
  }

  private _onFrame(f: Frame | null): void {
    if (!f) return;
    const type = f.type;
    if (type === "connected") return this._onConnected(f as ConnectedFrame);
    if (type === "message") return this._onMessage(f as Message);
    if (type === "reconnect") this._advice = f as ReconnectAdvisory;
    const p = f.id != null ? this._pending.get(f.id) : undefined;
    if (p) {
      this._pending.delete(f.id);
      if (type === "error") {
        const err = new ServerError(f.message || "error", f.code || 0);
        if (p.msg.type === "subscribe") return this._subscribeRefused(p.msg.channel, err);
        return p.reject(err);
      }
      if (p.msg.type === "subscribe" && type === "subscribed") this._onSubscribed(f as SubscribedReply);
      p.resolve(f);
    }
    if ((type === "join" || type === "leave") && f.channel) this.channels.get(f.channel)?.sub?._dispatch(type, f as any);
    this._emit(type, f as never); // errors reach "error" listeners only when no request was waiting
  }

  private _onConnected(f: ConnectedFrame): void {
    clearTimeout(this._connectTimer);
    if (this._pings && f.ping_interval > 0) this._watch(this._ws!, f.ping_interval);
    this.user = f.user;
    this.clientId = f.client;
    this.node = f.node ?? null;
    for (const ch of f.channels || []) this._entry(ch).auto = true;
    for (const st of this.channels.values()) st.live = st.auto && !st.offset; // resumed ones go live on their reply
    this._ready = this._wsEverOpened = true;
    this._wsFails = 0;
    this.stats.connections++;
    this._setState({ state: "connected" });
    for (const [channel, st] of this.channels) {
      if (st.offset && (st.subscribed || st.auto)) this._sendSubscribe(channel);
      else if (st.subscribed && st.auto) st.sub?._subscribed({ type: "subscribed", channel });
      else if (st.subscribed) this._sendSubscribe(channel);
    }
    if (!this._resuming()) this._attempt = 0;
    if (this._status != null) this._send({ type: "presence", status: this._status });
    for (const p of this._queued.splice(0)) this._sendRequest(p);
    this._scheduleRefresh();
    this._emit("connected", f);
  }

  /** The server pings every `interval` s: nothing for two intervals (and 5 s) means it is gone
   * without a FIN (a partition, a frozen host). Only where pings are visible (Node's `ws`). */
  private _watch(ws: WebSocketLike, interval: number): void {
    const limit = (2 * interval + 5) * 1000;
    const tick = () => {
      if (this._ws !== ws) return;
      if (Date.now() - this._lastSeen <= limit) return void (this._connectTimer = setTimeout(tick, limit / 4));
      this._teardown();
      this._onWsClose(1006, true);
    };
    this._connectTimer = setTimeout(tick, limit / 4);
  }

  private _resuming(): boolean {
    for (const st of this.channels.values()) if (st.inflight) return true;
    return false;
  }

  private _entry(channel: string): ChannelState {
    let st = this.channels.get(channel);
    if (!st) {
      st = { subscribed: false, auto: false, offset: null, epoch: null, live: false, inflight: false, asked: null,
             retry: 0, sub: null };
      this.channels.set(channel, st);
    }
    return st;
  }

  private _sendSubscribe(channel: string): void {
    const st = this.channels.get(channel);
    if (!st || st.inflight || !this._ready) return;
    st.inflight = true;
    st.live = false;
    st.asked = st.offset && st.epoch ? { offset: st.offset, epoch: st.epoch } : null;
    const msg: Frame = { type: "subscribe", channel };
    if (st.asked) msg.since = st.asked;
    const id = this._nextId++;
    this._pending.set(id, { msg, resolve() {}, reject() {} }); // settled by _onSubscribed / _subscribeRefused
    this._send({ ...msg, id });
  }

  private _onSubscribed(f: SubscribedReply): void {
    const st = this.channels.get(f.channel);
    if (!st || !st.inflight) return;
    const asked = st.asked;
    st.inflight = false;
    st.live = true;
    st.asked = null;
    st.retry = 0;
    if (asked && f.recovered === false) {
      // The gap cannot be filled: go on from the channel's latest offset and say so.
      st.offset = f.offset ?? null;
      st.epoch = f.epoch ?? null;
      this._recovery({ channel: f.channel, recovered: false, reason: "not_recovered", previous: asked,
                       epoch: f.epoch, offset: f.offset });
    } else if (!asked && f.offset) {
      // A fresh subscription starts at the channel's latest offset; a recovered one keeps ours,
      // because the missed messages follow this reply.
      if (!st.offset || st.epoch !== f.epoch || compareOffsets(f.offset, st.offset) > 0) {
        st.offset = f.offset;
        st.epoch = f.epoch ?? null;
      }
    }
    st.sub?._subscribed(f);
    if (!this._resuming()) this._attempt = 0; // the connection did real work: every channel is live
  }

  private _subscribeRefused(channel: string, err: ServerError): void {
    const st = this.channels.get(channel);
    if (!st) return;
    st.inflight = false;
    st.asked = null;
    const sub = st.sub, waiting = !!sub?._waiting();
    if (st.subscribed && (err.code === 429 || err.code >= 500)) {
      // Rate limited (1,000 channels resubscribed at once) or the engine unavailable: the channel
      // stays held and the same subscribe goes out again later, on this connection.
      const timer = setTimeout(() => {
        this._retries.delete(timer);
        if (this.channels.get(channel) === st && !st.live) this._sendSubscribe(channel);
      }, backoffDelay(st.retry++, this.minDelayMs, this.maxDelayMs, this.random));
      this._retries.add(timer);
      return;
    }
    const ev = { type: "error" as const, channel, code: err.code, message: err.message };
    if (st.auto) { st.subscribed = false; st.sub = null; } else this.channels.delete(channel);
    sub?._fail(err, true, ev);
    if (!waiting) this._emit("error", ev); // nobody awaits it: report it to the client's listeners
  }

  private _recovery(ev: RecoveryEvent): void {
    this.stats.recoveries++;
    this.channels.get(ev.channel)?.sub?._dispatch("recovery", ev);
    this._emit("recovery", ev);
  }

  /** Track offset/epoch and deliver, unless it was delivered before (or comes again after a resume reply). */
  private _onMessage(m: Message): void {
    const st = this.channels.get(m.channel);
    if (!st) return; // not a channel we hold (e.g. just unsubscribed)
    if (m.offset != null) {
      // While a resubscribe with `since` is in flight, drop early messages: the server sends
      // everything after `since` again, in order, right after its `subscribed` reply.
      if (!st.live && st.offset) { this.stats.early++; return; }
      if (st.offset && st.epoch && m.epoch && m.epoch !== st.epoch) {
        this._recovery({ channel: m.channel, recovered: false, reason: "epoch_changed",
                         previous: { offset: st.offset, epoch: st.epoch }, epoch: m.epoch });
      } else if (st.offset && compareOffsets(m.offset, st.offset) <= 0) {
        this.stats.duplicates++;
        return;
      }
      st.offset = m.offset;
      if (m.epoch) st.epoch = m.epoch;
    }
    if (!m.event) m.event = "message";
    st.sub?._dispatch("message", m);
    this._emit("message", m);
  }

  // ---- requests -----------------------------------------------------------------------------
  private _request<R>(msg: Frame, timeoutMs?: number): Promise<R> {
    if (this.transport === "sse") return Promise.reject(new NotSupported(`${msg.type} is not available over SSE`));
    if (this._stopped) return Promise.reject(new ClientClosed(`${msg.type}: the client is not connected`));
    return new Promise<R>((resolve, reject) => {
      const ms = timeoutMs ?? this.timeoutMs;
      const p: Pending = { msg: clean(msg), resolve, reject };
      p.timer = setTimeout(() => {
        for (const [id, q] of this._pending) if (q === p) this._pending.delete(id);
        this._queued = this._queued.filter((q) => q !== p);
        reject(new RequestTimeout(`no reply to ${msg.type} within ${ms} ms`));
      }, ms);
      p.resolve = (r) => { clearTimeout(p.timer); resolve(r); };
      p.reject = (e) => { clearTimeout(p.timer); reject(e); };
      if (this._ready) this._sendRequest(p); else this._queued.push(p); // sent once connected
    });
  }

  private _sendRequest(p: Pending): void {
    const id = this._nextId++;
    this._pending.set(id, p);
    this._send({ ...p.msg, id });
  }

  /** Publish to `channel` (the token's `publish` claim must allow it). */
  publish(channel: string, data: unknown, event?: string, opts?: RequestOptions): Promise<PublishedReply> {
    return this._request({ type: "publish", channel, data, event }, opts?.timeoutMs);
  }

  /** A direct message: event "chat" with data {text} on `user:<recipientId>`. */
  chat(recipientId: string, text: string, opts?: RequestOptions): Promise<SentReply> {
    return this._request({ type: "chat", recipientId, text }, opts?.timeoutMs);
  }

  /** The clients present in `channel`. */
  who(channel: string, opts?: RequestOptions): Promise<WhoReply> {
    return this._request({ type: "who", channel }, opts?.timeoutMs);
  }

  /** The same as who(). */
  presence(channel: string, opts?: RequestOptions): Promise<WhoReply> {
    return this.who(channel, opts);
  }

  /** How many connections and distinct users are present in `channel`. */
  async presenceStats(channel: string, opts?: RequestOptions): Promise<PresenceStats> {
    const { clients } = await this.who(channel, opts);
    return { channel, clients: clients.length, users: new Set(clients.map((c) => c.user)).size };
  }

  ping(opts?: RequestOptions): Promise<PongReply> {
    return this._request({ type: "ping" }, opts?.timeoutMs);
  }

  /** Messages of `channel` kept by the server (after `since`, at most `limit`). */
  history<T = unknown>(channel: string, opts: HistoryOptions = {}): Promise<HistoryReply<T>> {
    return this._request({ type: "history", channel, since: opts.since || undefined, limit: opts.limit ?? undefined },
                         opts.timeoutMs);
  }

  /**
   * Set this connection's presence status (sent again after every reconnect). Resolves once the
   * server took it: the server answers a connection's frames in order, so a ping follows it.
   */
  async setStatus(status: string, opts?: RequestOptions): Promise<void> {
    if (this.transport === "sse") throw new NotSupported("presence is not available over SSE");
    this._status = status;
    if (!this._ready) return; // sent when the connection opens
    const failed: { error?: HeraldError } = {};
    const id = this._nextId++;
    this._pending.set(id, { msg: { type: "presence" }, resolve() {}, reject(e) { failed.error = e; } });
    this._send({ type: "presence", status, id });
    try {
      await this.ping(opts);
    } catch (err) {
      if (!(err instanceof ConnectionLost)) throw err; // sent again with the next connection
    } finally {
      this._pending.delete(id);
    }
    if (failed.error && !(failed.error instanceof ConnectionLost)) throw failed.error;
  }

  /** Use a new token now (given, or from getToken) on the open connection and for every later one. */
  async refresh(token?: string, opts?: RequestOptions): Promise<RefreshedReply> {
    if (token === undefined) {
      if (!this.getToken) throw new HeraldError("refresh() needs a token or getToken");
      token = await this.getToken();
    }
    this.token = token;
    this._needToken = false;
    if (this.transport === "sse") { this._reopenSoon(); return { type: "refreshed" }; }
    if (!this._ready) return { type: "refreshed" };
    const reply = await this._request<RefreshedReply>({ type: "refresh", token }, opts?.timeoutMs);
    this._scheduleRefresh();
    return reply;
  }

  private _scheduleRefresh(): void {
    clearTimeout(this._refreshTimer);
    const delay = this.getToken && refreshDelay(this.token, this._opts.refreshMarginMs ?? 30000, Date.now());
    if (delay == null) return;
    // On failure the server closes with 4001 and the client reconnects with a fresh token.
    this._refreshTimer = setTimeout(() => {
      this.refresh().catch((err) => this._emit("error", { code: err?.code || 0, message: `token refresh failed: ${err}` }));
    }, delay);
  }

  // ---- channels -------------------------------------------------------------------------------
  /**
   * Hold `channel` until unsubscribe(), resumed after every reconnect. Returns its Subscription
   * (the same one while held), which is also a promise-like of the `subscribed` reply.
   */
  subscribe<T = unknown>(channel: string, opts: SubscribeOptions = {}): Subscription<T> {
    const held = this.channels.get(channel);
    if (held?.subscribed && held.sub) return held.sub as Subscription<T>;
    const sub = new Subscription<T>(this, channel);
    if (opts.since && !held?.offset) Object.assign(this._entry(channel), opts.since);
    this._hold(sub);
    return sub;
  }

  /** @internal */
  _hold(sub: Subscription<any>): void {
    const st = this._entry(sub.channel);
    st.subscribed = true;
    st.sub = sub;
    sub._setState("subscribing");
    if (this.transport === "sse") this._reopenSoon(); // live with the next stream's `open`
    else if (this._ready && st.auto && st.live) sub._subscribed({ type: "subscribed", channel: sub.channel });
    else if (this._ready) this._sendSubscribe(sub.channel);
  }

  /** @internal */
  _position(channel: string): Position | null {
    const st = this.channels.get(channel);
    return st?.offset && st.epoch ? { offset: st.offset, epoch: st.epoch } : null;
  }

  /** Stop receiving `channel`; its Subscription ends. */
  unsubscribe(channel: string): Promise<UnsubscribedReply> {
    const st = this.channels.get(channel);
    const done: UnsubscribedReply = { type: "unsubscribed", channel };
    if (!st?.subscribed) return Promise.resolve(done);
    const sub = st.sub;
    st.subscribed = false;
    st.sub = null;
    if (!st.auto) this.channels.delete(channel); // the personal channel stays: only our hold on it goes
    sub?._fail(new HeraldError(`${channel}: unsubscribed`), true);
    if (this.transport === "sse") { this._reopenSoon(); return Promise.resolve(done); }
    if (st.auto || !this._ready) return Promise.resolve(done);
    return this._request<UnsubscribedReply>({ type: "unsubscribe", channel }).catch(() => done);
  }

  // ---- SSE transport ----------------------------------------------------------------------------
  private _openSse(): void {
    this._teardown();
    const ES = this._EventSource();
    if (!ES) {
      this._emit("error", { code: 0, message: "no WebSocket or EventSource here: pass the websocket or eventsource option" });
      return this._final(0, "no transport");
    }
    const sub = jwtClaims(this.token).sub; // SSE has no `connected` frame
    if (typeof sub === "string") { this.user = sub; this._entry(`user:${sub}`).auto = true; }
    const params: Array<[string, string]> = this.token ? [["token", this.token]] : [];
    const included: string[] = [];
    for (const [channel, st] of this.channels) if (st.subscribed && !st.auto) included.push(channel);
    for (const channel of included) params.push(["channel", channel]);
    // The browser sends Last-Event-ID itself only when it reconnects to the same URL.
    if (this._lastEventId) params.push(["lastEventId", this._lastEventId]);
    const es = new ES(this._endpoint("events", params).href);
    this._es = es;
    const onEvent = (ev: any) => { if (this._es === es) this._onSseEvent(ev); };
    for (const name of new Set([...SSE_EVENTS, ...this.sseEvents])) es.addEventListener(name, onEvent);
    es.onopen = () => {
      if (this._es !== es) return;
      this._attempt = 0;
      this.stats.connections++;
      this._setState({ state: "connected" });
      for (const [channel, st] of this.channels) {
        st.live = st.auto || included.includes(channel);
        if (st.live && st.subscribed) st.sub?._subscribed({ type: "subscribed", channel });
      }
      this._scheduleSseRefresh();
    };
    es.onerror = (ev: any) => {
      // A server-sent `event: error` is dispatched here too: it is a frame (see _onSseEvent),
      // not a problem with the stream, which is still open.
      if (this._es !== es || typeof ev?.data === "string") return;
      if (es.readyState !== 2) return this._setState({ state: "connecting" }); // EventSource retries on its own
      // Hard failure (HTTP error, wrong content type): retry ourselves.
      this._teardown();
      this._connectionEnded();
      if (this.getToken) this._needToken = true; // it may have been a 401
      const delay = this._backoff();
      this._setState({ state: "disconnected", reconnect: true, delayMs: delay });
      this._retry(delay);
    };
  }

  private _scheduleSseRefresh(): void {
    clearTimeout(this._refreshTimer);
    const delay = this.getToken && refreshDelay(this.token, this._opts.refreshMarginMs ?? 30000, Date.now());
    if (delay != null) this._refreshTimer = setTimeout(() => { this._needToken = true; this._reopenSoon(); }, delay);
  }

  private _onSseEvent(ev: { type: string; data?: unknown; lastEventId?: string }): void {
    if (typeof ev.data !== "string") return; // EventSource's own "error" (connection problem): see onerror
    if (ev.lastEventId) this._lastEventId = ev.lastEventId;
    const f = parseJson(ev.data);
    if (!f) return;
    if (ev.type === "recovery") {
      for (const channel of f.channels || []) {
        const st = this.channels.get(channel);
        const previous = st?.offset && st.epoch ? { offset: st.offset, epoch: st.epoch } : undefined;
        if (st) st.offset = st.epoch = null; // the stream goes on from the channel's latest offset
        this._recovery({ channel, recovered: false, reason: "not_recovered", previous });
      }
      return;
    }
    if (!f.type) f.type = f.channel && f.offset != null ? "message" : ev.type;
    this._onFrame(f);
  }

  private _reopenSoon(): void {
    if (this._stopped || !this._es || this._reopenQueued) return; // otherwise the next open picks it up
    this._reopenQueued = true;
    queueMicrotask(() => {
      this._reopenQueued = false;
      if (!this._stopped && this._es) this._open();
    });
  }
}
